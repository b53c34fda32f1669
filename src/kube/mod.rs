//! Kubernetes mode (`proto controller`): the company's resources read from a namespace by
//! watchers and reflectors ([`source`]), their status and Events written back ([`status`],
//! [`events`]), a finalizer on Goals ([`finalizer`]), and leader election on a Lease
//! ([`lease`]) so that of several replicas only one dispatches. [`controller`] wires them
//! around the same engine that runs on git.

pub mod controller;
pub mod declared;
pub mod env;
pub mod events;
pub mod finalizer;
pub mod lease;
pub mod source;
pub mod status;

pub use controller::{ControllerError, Options, run};
pub use source::KubeSource;
