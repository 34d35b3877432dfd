//! Named crash points for the tests that kill the services as real processes.
//!
//! A build with the `crash-points` feature (test builds only: `subsidy`'s tests enable it; a
//! release build has none and [`point`] compiles to nothing) reads `SUBSIDY_CRASH_AT` once: a
//! comma-separated list of point names, each optionally `NAME@N` (the N-th time the point is
//! reached, counting from 1; default the first). When the process reaches a listed point it
//! writes `crash point NAME reached` to standard error and sends itself `SIGKILL`: it dies at
//! that instant as `kill -9` would, with no destructor run, no buffer flushed, no transaction
//! rolled back by the process and no answer sent.
//!
//! The points (each sits where a crash hurts most: after another party has acted, before this
//! process recorded it):
//! - `application.claim.recorded`: a claim committed without its acceptance number, not
//!   numbered yet;
//! - `application.claim.reserved`: the budget made a claim's reservation, not recorded yet;
//! - `application.claim.committed`: the budget committed a claim's approval, not recorded yet;
//! - `application.round.awarded`: the budget reserved a proposal's award, not recorded yet;
//! - `budget.batch.committed`: a batch of reservation changes committed, no caller answered;
//! - `notification.webhook.delivered`: an endpoint accepted a delivery, not recorded yet.

/// Reaching the point called `name`: the process dies here when `SUBSIDY_CRASH_AT` lists it
/// (in builds with the `crash-points` feature).
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "crash-points")]
    armed::reached(name);
    #[cfg(not(feature = "crash-points"))]
    let _ = name;
}

#[cfg(feature = "crash-points")]
mod armed {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    /// The listed points and, for each, the hit on which it fires and the hits so far.
    type Armed = Mutex<HashMap<String, (u64, u64)>>;

    fn armed() -> &'static Armed {
        static ARMED: OnceLock<Armed> = OnceLock::new();
        ARMED.get_or_init(|| {
            let listed = std::env::var("SUBSIDY_CRASH_AT").unwrap_or_default();
            let points = listed
                .split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(|entry| match entry.split_once('@') {
                    Some((name, nth)) => (
                        name.to_owned(),
                        (
                            nth.parse()
                                .expect("SUBSIDY_CRASH_AT: NAME@N with N a number"),
                            0,
                        ),
                    ),
                    None => (entry.to_owned(), (1, 0)),
                })
                .collect();
            Mutex::new(points)
        })
    }

    pub(super) fn reached(name: &str) {
        let fire = {
            let mut armed = armed()
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match armed.get_mut(name) {
                Some((nth, hits)) => {
                    *hits += 1;
                    *hits == *nth
                }
                None => false,
            }
        };
        if fire {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "crash point {name} reached");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            // SIGKILL is not delivered later than this; should it be, stop anyway.
            std::process::abort();
        }
    }
}
