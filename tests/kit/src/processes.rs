//! The services as real OS processes: a [`Launch`] that starts `subsidy serve KIND` with the
//! environment the [`Stack`](crate::Stack) made for it, and starts it again whenever it dies,
//! as Kubernetes restarts a container. Each start may be armed with a named crash point
//! (`SUBSIDY_CRASH_AT`, see `subsidy_common::crash`): the process then kills itself with
//! `SIGKILL` when it reaches that point, and the supervisor records the death.
//!
//! Stopping the service (`Stack::stop`) sends `SIGTERM` and waits for the drain;
//! `Stack::kill` kills the process with `SIGKILL`.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use subsidy_common::config::ServiceKind;

use crate::stack::{Environments, Launch};

/// The `subsidy` binary of this build, beside the test executable's directory
/// (`target/debug/subsidy`): a crate other than `subsidy` cannot name it through
/// `CARGO_BIN_EXE_subsidy`. `cargo test --workspace` (what `scripts/test` runs) builds it.
pub fn subsidy_binary() -> PathBuf {
    let test = std::env::current_exe().expect("the test executable's path");
    // target/debug/deps/TEST-HASH → target/debug/subsidy
    let binary = test
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test runs from target/PROFILE/deps")
        .join("subsidy");
    assert!(
        binary.is_file(),
        "{} is missing: build it with `cargo build -p subsidy --bin subsidy` (or test the workspace)",
        binary.display()
    );
    binary
}

/// Starts one more process of `kind` with `environment` (another replica of a service the
/// stack runs), serving on `listen`. It is killed when the handle is dropped.
pub fn start_replica(
    kind: ServiceKind,
    binary: &std::path::Path,
    environment: &HashMap<String, String>,
    listen: &str,
) -> tokio::process::Child {
    tokio::process::Command::new(binary)
        .arg("serve")
        .arg(kind.name())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(environment)
        .env("SUBSIDY_LISTEN", listen)
        .env("RUST_LOG", "warn")
        .env("SUBSIDY_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start a replica")
}

/// One death of a service process by `SIGKILL`.
#[derive(Clone, Debug)]
pub struct Death {
    /// The service.
    pub kind: ServiceKind,
    /// The crash point its start was armed with, if any.
    pub armed: Option<String>,
    /// When the supervisor saw it.
    pub at: Instant,
}

#[derive(Default)]
struct State {
    plans: HashMap<ServiceKind, VecDeque<String>>,
    deaths: Vec<Death>,
    starts: HashMap<ServiceKind, usize>,
}

/// Starts the service processes, arms their crash points and restarts them when they die.
#[derive(Clone, Default)]
pub struct Supervisor {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor with nothing armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Arms the next starts of `kind`, one point each, in order (`NAME` or `NAME@N`); later
    /// starts run unarmed.
    pub fn arm(&self, kind: ServiceKind, points: &[&str]) {
        self.lock()
            .plans
            .entry(kind)
            .or_default()
            .extend(points.iter().map(|point| (*point).to_owned()));
    }

    /// Every death by `SIGKILL` so far, in order.
    pub fn deaths(&self) -> Vec<Death> {
        self.lock().deaths.clone()
    }

    /// How many times `kind` was started.
    pub fn starts(&self, kind: ServiceKind) -> usize {
        self.lock().starts.get(&kind).copied().unwrap_or(0)
    }

    /// Fails unless every armed crash point was reached, saying why that may be.
    #[track_caller]
    pub fn assert_all_reached(&self) {
        let unreached = self.unreached();
        assert!(
            unreached.is_empty(),
            "armed crash points never reached: {unreached:?} (deaths: {:?}); is the `subsidy` \
             binary a test build with the crash-points feature? `cargo test --workspace --no-run` \
             builds one, a plain `cargo build -p subsidy` does not",
            self.deaths()
        );
    }

    /// The crash points armed but not reached yet.
    pub fn unreached(&self) -> Vec<(ServiceKind, String)> {
        self.lock()
            .plans
            .iter()
            .flat_map(|(kind, points)| points.iter().map(|point| (*kind, point.clone())))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the supervisor's lock is never poisoned")
    }

    /// A launch that runs `binary serve KIND` with the environment `environments` holds for
    /// the service (see [`crate::Stack::spawn_into`]).
    pub fn launch(&self, binary: PathBuf, environments: Environments) -> Launch {
        let supervisor = self.clone();
        Arc::new(move |kind, _config, listener, mut stop| {
            let supervisor = supervisor.clone();
            let binary = binary.clone();
            let environment = environments
                .lock()
                .expect("the environments lock is never poisoned")
                .get(&kind)
                .cloned()
                .expect("the stack wrote the service's environment before starting it");
            Box::pin(async move {
                // The process binds the same address itself.
                drop(listener);
                loop {
                    let armed = {
                        let mut state = supervisor.lock();
                        *state.starts.entry(kind).or_default() += 1;
                        // A point stays armed (at the head) until a start reaches it.
                        state
                            .plans
                            .get(&kind)
                            .and_then(|points| points.front().cloned())
                    };
                    let mut command = tokio::process::Command::new(&binary);
                    command
                        .arg("serve")
                        .arg(kind.name())
                        .env_clear()
                        .env("PATH", std::env::var("PATH").unwrap_or_default())
                        .envs(&environment)
                        .env("RUST_LOG", "warn")
                        .env("SUBSIDY_LOG_FORMAT", "text")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::inherit())
                        .kill_on_drop(true);
                    if let Some(point) = &armed {
                        command.env("SUBSIDY_CRASH_AT", point);
                    }
                    let mut child = command.spawn()?;
                    tokio::select! {
                        status = child.wait() => {
                            let status = status?;
                            if status.signal() != Some(9) {
                                return Err(format!("{} exited: {status}", kind.name()).into());
                            }
                            let mut state = supervisor.lock();
                            let reached = armed.is_some();
                            if reached && let Some(points) = state.plans.get_mut(&kind) {
                                points.pop_front();
                            }
                            state.deaths.push(Death { kind, armed, at: Instant::now() });
                        }
                        () = async { drop(stop.wait_for(|stopped| *stopped).await) } => {
                            if let Some(pid) = child.id() {
                                let _ = std::process::Command::new("kill")
                                    .args(["-TERM", &pid.to_string()])
                                    .status();
                            }
                            child.wait().await?;
                            return Ok(());
                        }
                    }
                }
            })
        })
    }
}
