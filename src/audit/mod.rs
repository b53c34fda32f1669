//! `proto audit`: what the agents and the controller did, read from the audit trail the
//! controller committed to the company repository (`.proto/audit/<day>.jsonl`). Git is the
//! truth here; the store only indexes it. [`read`] takes the committed files from the
//! tracked branch's tip, [`parse`] turns their lines into records (a malformed line is a
//! located warning, never a crash), [`filter`] is the pure query, [`render`] prints it.

pub mod filter;
pub mod parse;
pub mod read;
pub mod render;

pub use filter::{Filter, Glob};
pub use parse::{Skipped, parse_file};
pub use read::{Trail, read};
