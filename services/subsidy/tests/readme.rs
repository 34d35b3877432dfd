//! The README's command block, run as written: a fresh `subsidy dev` on free ports, then every
//! `subsidyctl` line of the block after "With the dev stack running" in order (with the claim
//! and round ids the commands before printed put in for `CLAIM_ID` and `ROUND_ID`). Each must
//! succeed; `watch` must show the approval the block made. A README command that stops
//! working fails this test.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Dev, repo_root};

/// How long `watch` may take to show the approval.
const WATCH_WAIT_S: u64 = 30;

/// The `subsidyctl` commands of the README's block that follows "With the dev stack running",
/// each split into its arguments (comments dropped, continued lines joined).
fn readme_commands() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme
        .find("With the dev stack running")
        .expect("the README has the dev-stack block");
    let block = &readme[start..];
    let open = block.find("```sh\n").expect("the block opens") + "```sh\n".len();
    let close = open + block[open..].find("```").expect("the block closes");
    let mut commands = Vec::new();
    let mut pending = String::new();
    for line in block[open..close].lines() {
        let line = line.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let text = std::mem::take(&mut pending);
        let words = shlex::split(&text).unwrap_or_else(|| panic!("cannot split {text:?}"));
        let words: Vec<String> = words.into_iter().take_while(|w| w != "#").collect();
        if words.first().map(String::as_str) == Some("subsidyctl") {
            commands.push(words[1..].to_vec());
        }
    }
    commands
}

/// The value of the record line `label` in `subsidyctl`'s table output (`CLAIM  claim-…`).
fn record_value(stdout: &str, label: &str) -> Option<String> {
    stdout.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(label))
            .then(|| words.next().map(str::to_owned))
            .flatten()
    })
}

#[test]
fn every_command_of_the_readme_block_works_against_a_fresh_dev_stack() {
    let commands = readme_commands();
    assert!(
        commands.len() >= 15,
        "the README block has its commands: {commands:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();

    let mut claim_id = None;
    let mut round_id = None;
    let mut watched = false;
    for words in &commands {
        if words.first().map(String::as_str) == Some("watch") {
            watch_shows_the_approval(&dev, words);
            watched = true;
            continue;
        }
        let args: Vec<String> = words
            .iter()
            .map(|word| match word.as_str() {
                "CLAIM_ID" => claim_id.clone().expect("a claim was submitted before"),
                "ROUND_ID" => round_id.clone().expect("a round was opened before"),
                _ => word.clone(),
            })
            .collect();
        let output = dev.run(&args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`subsidyctl {}` failed ({}):\n{stdout}\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["claim", "submit", ..] => {
                claim_id = record_value(&stdout, "CLAIM");
                assert_eq!(
                    record_value(&stdout, "STATE").as_deref(),
                    Some("PENDING_REVIEW"),
                    "{stdout}"
                );
            }
            ["claim", "approve", ..] => {
                assert_eq!(
                    record_value(&stdout, "STATE").as_deref(),
                    Some("APPROVED"),
                    "{stdout}"
                );
                assert_eq!(
                    record_value(&stdout, "REVIEWER").as_deref(),
                    Some("r.wang"),
                    "{stdout}"
                );
            }
            ["round", "open", ..] => round_id = record_value(&stdout, "ROUND"),
            ["round", "close", ..] => assert_eq!(
                record_value(&stdout, "STATE").as_deref(),
                Some("CLOSED"),
                "{stdout}"
            ),
            ["ledger", "verify"] => assert!(stdout.contains("INTACT"), "{stdout}"),
            ["history", ..] => assert!(stdout.contains("reviewer:r.wang"), "{stdout}"),
            _ => {}
        }
    }
    assert!(watched, "the README block follows the event stream");
}

/// `subsidyctl watch` as the README runs it follows the stream and shows the approval the block made,
/// without a connection error.
fn watch_shows_the_approval(dev: &Dev, args: &[String]) {
    let mut child = dev
        .ctl(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start subsidyctl watch");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    for reader in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(WATCH_WAIT_S);
    let mut shown = Vec::new();
    let approved = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) => {
                // Event types are printed in their one spelling, the dotted name.
                let found = line.contains("claim.approved");
                shown.push(line);
                if found {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(approved, "watch showed no approval:\n{}", shown.join("\n"));
    assert!(
        !shown.iter().any(|line| line.contains("cannot reach")),
        "{}",
        shown.join("\n")
    );
}
