//! A fresh `subsidy dev` on free ports and the real `subsidyctl` pointed at it, for the tests
//! that run the binaries as a user does (`readme.rs`, `cli.rs`, `dev_stack.rs`); and
//! [`webhooks`], a local webhook endpoint with the checks of its bodies against the event
//! catalogue. Each test crate uses a part of it.
#![allow(dead_code)]

pub mod webhooks;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the dev stack may take to come up.
const START_WAIT_S: u64 = 60;

/// The repository root (the README's relative paths start there).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Four free ports on loopback.
pub fn free_ports() -> Vec<u16> {
    let listeners: Vec<_> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Command-line words as owned strings.
pub fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

/// The standard output of a command that must succeed.
#[track_caller]
pub fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A running `subsidy dev`, killed when dropped.
pub struct Dev {
    child: Child,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its application, rules, budget and notification ports.
    pub ports: Vec<u16>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// Starts `subsidy dev` on free ports with its data under `data_dir`.
    pub fn start(data_dir: &Path) -> Dev {
        Dev::start_with_env(data_dir, &[])
    }

    /// Starts `subsidy dev` like [`Dev::start`], with these settings in its environment (e.g.
    /// `SUBSIDY_NOTIFICATION_ALLOW_HTTP`).
    pub fn start_with_env(data_dir: &Path, settings: &[(&str, &str)]) -> Dev {
        let ports = free_ports();
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        let child = Command::new(env!("CARGO_BIN_EXE_subsidy"))
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .args(["--ports", &list.join(",")])
            .env("RUST_LOG", "warn")
            .envs(settings.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start subsidy dev");
        Dev {
            child,
            data_dir: data_dir.to_owned(),
            ports,
        }
    }

    /// `subsidyctl` pointed at this stack, run from the repository root (the README's paths
    /// are relative to it).
    pub fn ctl(&self, args: &[String]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_subsidyctl"));
        command
            .args(args)
            .current_dir(repo_root())
            .env("SUBSIDY_DATA_DIR", &self.data_dir)
            .env_remove("SUBSIDY_TOKEN")
            .env_remove("SUBSIDY_CA_FILE")
            .env_remove("SUBSIDY_INSECURE")
            .env_remove("SUBSIDY_ACTOR");
        for (name, port) in [
            "SUBSIDY_APPLICATION_URL",
            "SUBSIDY_RULES_URL",
            "SUBSIDY_BUDGET_URL",
            "SUBSIDY_NOTIFICATION_URL",
        ]
        .iter()
        .zip(&self.ports)
        {
            command.env(name, format!("https://127.0.0.1:{port}"));
        }
        command
    }

    /// Runs `subsidyctl args` to completion.
    pub fn run(&self, args: &[String]) -> Output {
        self.ctl(args).output().expect("run subsidyctl")
    }

    /// Waits until `subsidyctl health` shows all four services SERVING.
    pub fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(START_WAIT_S);
        loop {
            let health = self.run(&["health".to_owned()]);
            let text = String::from_utf8_lossy(&health.stdout).into_owned();
            if health.status.success() && text.matches("SERVING").count() == 4 {
                return;
            }
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "subsidy dev exited early"
            );
            assert!(Instant::now() < deadline, "the dev stack did not come up");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The README's example claim, as several tests drive it.
impl Dev {
    /// Registers the example enterprise and submits `docs/examples/claim.yaml` (a contract of
    /// 2,000,000.00: 100,000.00 held); returns the claim id.
    pub fn submit_example_claim(&self) -> String {
        succeeded(&self.run(&args(&[
            "enterprise",
            "register",
            "--uscc",
            "91370100MA3C00001H",
            "--name",
            "Jinan Medical Imaging AI Co., Ltd.",
            "--email",
            "claims@example.cn",
        ])));
        let claim = succeeded(&self.run(&args(&[
            "-o",
            "json",
            "claim",
            "submit",
            "docs/examples/claim.yaml",
        ])));
        let claim: serde_json::Value = serde_json::from_str(&claim).expect("the claim as JSON");
        claim["claimId"]
            .as_str()
            .expect("the claim's id")
            .to_owned()
    }

    /// Approves `claim_id` on `verified` (CNY, e.g. `1500000.00`): first adds one invoice of
    /// that amount (numbered from the claim's id, dated 10 April 2025) and verifies it.
    pub fn approve(&self, claim_id: &str, verified: &str) {
        let number = subsidy_testkit::requests::invoice_number(claim_id);
        let invoice = format!("{number},2025-04-10,{verified}");
        succeeded(&self.run(&args(&[
            "claim",
            "invoice",
            "add",
            claim_id,
            "--invoice",
            &invoice,
        ])));
        succeeded(&self.run(&args(&["claim", "invoice", "verify", claim_id, &number])));
        succeeded(&self.run(&args(&[
            "claim",
            "approve",
            claim_id,
            "--verified",
            verified,
        ])));
    }
}
