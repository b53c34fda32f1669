//! Proto: a git-native declarative reconciler that runs an AI-staffed company.
//!
//! A company is declared as YAML in git (or as Kubernetes custom resources): its `Company`,
//! `Product`s, `Computer`s, `Agent`s and `Goal`s. [`spec`] loads and validates the
//! declaration; [`plan`] is the pure core that decides what to do about it; [`org`] and
//! [`output`] render what the CLI prints.

pub mod agent;
pub mod audit;
pub mod check;
pub mod computer;
pub mod engine;
pub mod example;
pub mod gitops;
pub mod knowledge;
#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod learning;
pub mod mcp;
pub mod memory;
pub mod model;
pub mod org;
pub mod output;
pub mod pattern;
pub mod place;
pub mod plan;
pub mod policy;
pub mod program;
pub mod secrets;
pub mod server;
pub mod source;
pub mod spec;
pub mod state_lock;
pub mod store;
#[cfg(test)]
mod test_rng;
pub mod tools;
