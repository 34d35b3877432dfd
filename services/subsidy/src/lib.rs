//! The umbrella of the subsidy services: `subsidy` runs them (all four in one process on
//! embedded SQLite for development, or one per process as Kubernetes runs them) and
//! `subsidyctl` talks to them for people.
#![forbid(unsafe_code)]

pub mod ctl;
pub mod launch;
