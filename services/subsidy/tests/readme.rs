//! The README, run: every command of every shell block of README.md, parsed from the file (not
//! copied), against this build's `subsidy dev` on free ports. A command that fails, or a line
//! this test does not know how to run, fails the test; the lines it does not run are listed in
//! [`SKIPPED`], each with its reason. In the blocks:
//!
//! - `subsidyctl …` (through the README's alias, which must name this package's binary) runs
//!   against the stack, with the ids the commands before printed put in for `CLAIM_ID`,
//!   `ROUND_ID` and `OBJECTION_ID`, `./data/…` the stack's data directory, the files the README
//!   writes (`--out F`, `> F`) in a scratch directory, and `$(date +%F)` today's date;
//! - `NAME=$(cargo run -q -p subsidy --bin subsidyctl -- …)` runs that `subsidyctl` command and
//!   keeps what it printed for `$NAME`;
//! - `npx --yes @bufbuild/buf@V …` runs that buf from npm's cache (`npx --offline`) against the
//!   stack's ports; the comments under such a command show what it prints and are checked (the
//!   error details of a failed `buf curl`, the JSON of `buf convert`). When that buf is not in
//!   the cache (CI's `buf lint` step puts it there) these lines are skipped, with the reason on
//!   standard error, because this test does not use the network;
//! - `echo 'BASE64' | base64 -d > FILE` decodes into the scratch directory.
//!
//! The objection walkthrough files objections, which needs an open publicity period: it runs on
//! a second stack started with `SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE=5`, as the README
//! says, after the README's commands up to its first `claim approve`. A second test checks that
//! every `subsidyctl` command the prose names in inline code parses with its options
//! (`subsidyctl … --help`); `claim reopen`, named only there, runs in `cli_claims.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{Dev, repo_root};

/// How long `watch` may take to show the approval.
const WATCH_WAIT_S: u64 = 30;

/// Fence languages whose blocks are shell commands: each line is run, or skipped with a reason.
const SHELL_LANGUAGES: [&str; 3] = ["sh", "bash", "shell"];
/// Fence languages of blocks that are not commands (diagrams, files).
const OTHER_LANGUAGES: [&str; 5] = ["mermaid", "toml", "yaml", "json", "text"];

/// The README lines this test does not run (matched whole, comment dropped), and why.
const SKIPPED: [(&str, &str); 2] = [
    (
        "cargo run -p subsidy --bin subsidy -- dev",
        "the stack itself: this test runs this build's `subsidy dev` (Dev::start: free ports, a \
         temporary data directory instead of ./data); dev_stack.rs tests its defaults",
    ),
    (
        "scripts/test",
        "the whole test suite, this test included: CI runs it (.ci/run)",
    ),
];

/// What the README's alias and its `$(…)` run: this package's `subsidyctl`, which the test
/// runs as the binary cargo built.
const SUBSIDYCTL: &str = "cargo run -q -p subsidy --bin subsidyctl --";

/// Why a `buf` line was not run.
const BUF_NOT_CACHED: &str = "that buf is not in npm's cache, and this test does not use the \
     network (CI's `buf lint` step caches it)";

/// The shell expansion of today's date that the README uses.
const TODAY: &str = "$(date +%F)";

/// The id placeholders: each, the command that prints the id, and its record line.
const IDS: [(&str, [&str; 2], &str); 3] = [
    ("CLAIM_ID", ["claim", "submit"], "CLAIM"),
    ("ROUND_ID", ["round", "open"], "ROUND"),
    ("OBJECTION_ID", ["objection", "file"], "OBJECTION"),
];

/// The services' addresses in the README (application, rules, budget, notification), which
/// become the stack's.
const README_ADDRESSES: [&str; 4] = [
    "127.0.0.1:50051",
    "127.0.0.1:50052",
    "127.0.0.1:50053",
    "127.0.0.1:50054",
];

/// The setting the README names for trying objections, which the objection walkthrough runs
/// with.
const PUBLICITY_OVERRIDE: (&str, &str) = ("SUBSIDY_RULES_PUBLICITY_WORKING_DAYS_OVERRIDE", "5");

/// A command shown in a shell block.
#[derive(Clone, Debug)]
struct Shown {
    /// Its first line in README.md, from 1.
    line: usize,
    /// Its words (continued lines joined, the comment dropped, today's date put in).
    words: Vec<String>,
    /// The comment lines right under it: what it prints, when the README shows that.
    notes: Vec<String>,
}

/// What the test does with a command.
#[derive(Clone, Debug)]
enum Step {
    /// `alias subsidyctl='…'` naming this package's binary.
    Alias,
    /// `subsidyctl ARGS`.
    Ctl(Vec<String>),
    /// `NAME=$(cargo run … subsidyctl -- ARGS)`.
    Assign { name: String, args: Vec<String> },
    /// `npx --yes PACKAGE ARGS` where the package is a version of `@bufbuild/buf`.
    Buf { package: String, args: Vec<String> },
    /// `echo 'BASE64' | base64 -d > FILE`.
    Decode { text: String, file: String },
    /// A line of [`SKIPPED`], with its reason.
    Skip(&'static str),
}

/// Today's date as `date +%F` prints it.
fn today() -> String {
    chrono::Local::now().format("%F").to_string()
}

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

/// The commands of each shell block of the README, in order. Fails on a block of no language
/// or of a language this test does not know.
fn shell_blocks(readme: &str) -> Vec<Vec<Shown>> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let opened = index + 1;
        let language = info.trim();
        let shell = SHELL_LANGUAGES.contains(&language);
        assert!(
            shell || OTHER_LANGUAGES.contains(&language),
            "README.md:{opened}: a block of language {language:?}: neither shell commands nor \
             a kind readme.rs knows; name its language, or teach readme.rs to run it"
        );
        let mut body = Vec::new();
        loop {
            let (index, text) = lines
                .next()
                .unwrap_or_else(|| panic!("README.md:{opened}: the block does not close"));
            if text.trim() == "```" {
                break;
            }
            body.push((index + 1, text));
        }
        if shell {
            blocks.push(commands(opened, &body));
        }
    }
    blocks
}

/// The commands of one shell block's lines (numbered).
fn commands(opened: usize, body: &[(usize, &str)]) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    let mut pending = String::new();
    let mut first = 0;
    // Whether comment lines are under the last command (no blank line between).
    let mut under = false;
    for &(number, raw) in body {
        let text = raw.trim();
        if pending.is_empty() {
            if text.is_empty() {
                under = false;
                continue;
            }
            if let Some(note) = text.strip_prefix('#') {
                if let Some(last) = shown.last_mut().filter(|_| under) {
                    last.notes.push(note.trim().to_owned());
                }
                continue;
            }
            first = number;
        }
        if let Some(head) = text.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(text);
        let line = std::mem::take(&mut pending).replace(TODAY, &today());
        let words = shlex::split(&line)
            .unwrap_or_else(|| panic!("README.md:{first}: cannot split {line:?}"));
        let words = words.into_iter().take_while(|word| word != "#").collect();
        shown.push(Shown {
            line: first,
            words,
            notes: Vec::new(),
        });
        under = true;
    }
    assert!(
        pending.is_empty(),
        "README.md:{opened}: the block ends in a continued line"
    );
    shown
}

/// What the test does with `words`; `None` for a line it does not know.
fn step(words: &[String]) -> Option<Step> {
    let text = words.join(" ");
    if let Some((_, reason)) = SKIPPED.iter().find(|(line, _)| *line == text) {
        return Some(Step::Skip(reason));
    }
    match words.first()?.as_str() {
        "alias" => (text == format!("alias subsidyctl={SUBSIDYCTL}")).then_some(Step::Alias),
        "subsidyctl" => Some(Step::Ctl(words[1..].to_vec())),
        "npx" => match &words[1..] {
            [yes, package, args @ ..]
                if yes == "--yes" && package.starts_with("@bufbuild/buf@") && !args.is_empty() =>
            {
                Some(Step::Buf {
                    package: package.clone(),
                    args: args.to_vec(),
                })
            }
            _ => None,
        },
        "echo" => match &words[1..] {
            [encoded, pipe, program, flag, into, file]
                if pipe == "|" && program == "base64" && flag == "-d" && into == ">" =>
            {
                Some(Step::Decode {
                    text: encoded.clone(),
                    file: file.clone(),
                })
            }
            _ => None,
        },
        _ => {
            let (name, inner) = text.split_once("=$(")?;
            let inner = inner.strip_suffix(')')?.strip_prefix(SUBSIDYCTL)?;
            let named =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_');
            named.then(|| Step::Assign {
                name: name.to_owned(),
                args: shlex::split(inner).unwrap_or_default(),
            })
        }
    }
}

/// The README's shell blocks as steps; fails listing every line the test does not know, and
/// every entry of [`SKIPPED`] no line matches.
fn readme_steps(readme: &str) -> Vec<Vec<(Shown, Step)>> {
    let mut unknown = Vec::new();
    let mut skips_used = BTreeSet::new();
    let blocks: Vec<Vec<(Shown, Step)>> = shell_blocks(readme)
        .into_iter()
        .map(|block| {
            block
                .into_iter()
                .filter_map(|shown| match step(&shown.words) {
                    Some(step) => {
                        if let Step::Skip(reason) = step {
                            skips_used.insert(reason);
                        }
                        Some((shown, step))
                    }
                    None => {
                        unknown.push(format!(
                            "README.md:{}: {}",
                            shown.line,
                            shown.words.join(" ")
                        ));
                        None
                    }
                })
                .collect()
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "lines of the README's shell blocks that readme.rs does not know how to run: run them \
         there, or add them to SKIPPED with the reason:\n{}",
        unknown.join("\n")
    );
    for (line, reason) in SKIPPED {
        assert!(
            skips_used.contains(reason),
            "SKIPPED names {line:?}, which no README block shows any more: remove it"
        );
    }
    blocks
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

/// The (type, value) pairs of the error details a comment under a `buf curl` shows.
fn shown_details(notes: &[String]) -> Vec<(String, String)> {
    let text = notes.join("\n");
    let quoted = |key: &str| -> Vec<String> {
        text.split(key)
            .skip(1)
            .filter_map(|rest| rest.split('"').next().map(str::to_owned))
            .collect()
    };
    let kinds = quoted("\"type\": \"");
    let values = quoted("\"value\": \"");
    assert_eq!(kinds.len(), values.len(), "details as shown: {text}");
    kinds.into_iter().zip(values).collect()
}

/// The commands of one run of README blocks on one stack, and what they left behind.
struct Session<'a> {
    dev: &'a Dev,
    /// Where the files the README writes go.
    scratch: PathBuf,
    /// Whether each buf package is in npm's cache.
    bufs: &'a BTreeMap<String, bool>,
    ids: BTreeMap<&'static str, String>,
    vars: BTreeMap<String, String>,
    /// Files the README wrote, by the name it gave.
    files: BTreeSet<String>,
    alias: bool,
    watched: bool,
    /// Lines not run, each with the reason.
    skipped: Vec<String>,
}

impl<'a> Session<'a> {
    fn new(dev: &'a Dev, scratch: PathBuf, bufs: &'a BTreeMap<String, bool>) -> Session<'a> {
        std::fs::create_dir_all(&scratch).expect("the scratch directory");
        Session {
            dev,
            scratch,
            bufs,
            ids: BTreeMap::new(),
            vars: BTreeMap::new(),
            files: BTreeSet::new(),
            alias: false,
            watched: false,
            skipped: Vec::new(),
        }
    }

    fn run(&mut self, shown: &Shown, step: &Step) {
        match step {
            Step::Alias => self.alias = true,
            Step::Ctl(args) => self.ctl(shown, args),
            Step::Assign { name, args } => {
                let args = self.put_in(shown, args);
                let stdout = ran(shown, &self.dev.run(&args));
                let value = stdout.trim().to_owned();
                assert!(
                    !value.is_empty(),
                    "README.md:{}: printed nothing",
                    shown.line
                );
                self.vars.insert(name.clone(), value);
            }
            Step::Buf { package, args } => self.buf(shown, package, args),
            Step::Decode { text, file } => {
                self.files.insert(file.clone());
                let mut child = Command::new("base64")
                    .arg("-d")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run base64");
                writeln!(child.stdin.take().unwrap(), "{text}").unwrap();
                let output = child.wait_with_output().unwrap();
                assert!(
                    output.status.success(),
                    "README.md:{}: base64 -d failed: {}",
                    shown.line,
                    String::from_utf8_lossy(&output.stderr)
                );
                std::fs::write(self.scratch.join(file), &output.stdout).unwrap();
            }
            Step::Skip(reason) => self.skip(shown, reason),
        }
    }

    fn skip(&mut self, shown: &Shown, reason: &str) {
        self.skipped.push(format!(
            "README.md:{}: `{}`: {reason}",
            shown.line,
            shown.words.join(" ")
        ));
    }

    /// `words` with the ids, variables, stack addresses, data directory and written files put
    /// in.
    fn put_in(&self, shown: &Shown, words: &[String]) -> Vec<String> {
        words
            .iter()
            .map(|word| {
                let mut word = word.clone();
                for (placeholder, _, _) in IDS {
                    if word.contains(placeholder) {
                        let id = self.ids.get(placeholder).unwrap_or_else(|| {
                            panic!(
                                "README.md:{}: {placeholder} before any command printed one",
                                shown.line
                            )
                        });
                        word = word.replace(placeholder, id);
                    }
                }
                for (name, value) in &self.vars {
                    word = word.replace(&format!("${name}"), value);
                }
                assert!(
                    !word.contains('$'),
                    "README.md:{}: {word:?}: an expansion readme.rs does not know",
                    shown.line
                );
                for (address, port) in README_ADDRESSES.iter().zip(&self.dev.ports) {
                    word = word.replace(address, &format!("127.0.0.1:{port}"));
                }
                if let Some(rest) = word
                    .strip_prefix("./data/")
                    .or_else(|| word.strip_prefix("data/"))
                {
                    return self.dev.data_dir.join(rest).display().to_string();
                }
                for file in &self.files {
                    if word == *file || word.starts_with(&format!("{file}#")) {
                        let path = self.scratch.join(file);
                        return format!("{}{}", path.display(), &word[file.len()..]);
                    }
                }
                word
            })
            .collect()
    }

    fn ctl(&mut self, shown: &Shown, args: &[String]) {
        assert!(
            self.alias,
            "README.md:{}: `subsidyctl` before the alias that names it",
            shown.line
        );
        if args.first().map(String::as_str) == Some("watch") {
            watch_shows_the_approval(self.dev, args);
            self.watched = true;
            return;
        }
        for pair in args.windows(2) {
            if pair[0] == "--out" {
                self.files.insert(pair[1].clone());
            }
        }
        let args = self.put_in(shown, args);
        let stdout = ran(shown, &self.dev.run(&args));
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        for (placeholder, command, label) in IDS {
            if words.starts_with(&command) {
                let id = record_value(&stdout, label).unwrap_or_else(|| {
                    panic!("README.md:{}: no {label} printed:\n{stdout}", shown.line)
                });
                self.ids.insert(placeholder, id);
            }
        }
        check(shown, &words, &stdout);
        for pair in words.windows(2) {
            if pair[0] == "--out" {
                let written = std::fs::metadata(pair[1]).map(|m| m.len()).unwrap_or(0);
                assert!(
                    written > 0,
                    "README.md:{}: nothing written to {}",
                    shown.line,
                    pair[1]
                );
            }
        }
    }

    fn buf(&mut self, shown: &Shown, package: &str, args: &[String]) {
        if !self.bufs[package] {
            self.skip(shown, BUF_NOT_CACHED);
            return;
        }
        let args = self.put_in(shown, args);
        let output = Command::new("npx")
            .args(["--offline", "--yes", package])
            .args(&args)
            .current_dir(repo_root())
            .output()
            .expect("run npx");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let printed = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        let line = shown.line;
        match args[0].as_str() {
            "curl" => {
                let details = shown_details(&shown.notes);
                if details.is_empty() {
                    assert!(
                        output.status.success(),
                        "README.md:{line}: buf failed:\n{printed}"
                    );
                    serde_json::from_str::<serde_json::Value>(&stdout).unwrap_or_else(|e| {
                        panic!("README.md:{line}: not a JSON answer ({e}):\n{printed}")
                    });
                } else {
                    // The README shows an error with its details: each must be as shown.
                    assert!(
                        !output.status.success(),
                        "README.md:{line}: succeeded, the README shows an error:\n{printed}"
                    );
                    for (kind, value) in details {
                        assert!(
                            printed.contains(&format!("\"{kind}\""))
                                && printed.contains(&format!("\"{value}\"")),
                            "README.md:{line}: the detail {kind} {value} is not as shown:\n{printed}"
                        );
                    }
                }
            }
            "convert" => {
                assert!(
                    output.status.success(),
                    "README.md:{line}: buf failed:\n{printed}"
                );
                let shown_json = shown
                    .notes
                    .iter()
                    .find(|note| note.starts_with('{'))
                    .unwrap_or_else(|| panic!("README.md:{line}: no output shown under it"));
                let expected: serde_json::Value = serde_json::from_str(shown_json).unwrap();
                let actual: serde_json::Value = serde_json::from_str(&stdout)
                    .unwrap_or_else(|e| panic!("README.md:{line}: not JSON ({e}):\n{printed}"));
                assert_eq!(
                    actual, expected,
                    "README.md:{line}: not what the README shows"
                );
            }
            other => panic!("README.md:{line}: `buf {other}`: readme.rs does not know it"),
        }
    }
}

/// The standard output of a README command that must have succeeded.
#[track_caller]
fn ran(shown: &Shown, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "README.md:{}: `{}` failed ({}):\n{stdout}\n{}",
        shown.line,
        shown.words.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// What some commands must have printed, beyond succeeding.
fn check(shown: &Shown, words: &[&str], stdout: &str) {
    let line = shown.line;
    let state = || record_value(stdout, "STATE");
    match words {
        ["claim", "submit", ..] => assert_eq!(
            state().as_deref(),
            Some("PENDING_REVIEW"),
            "README.md:{line}:\n{stdout}"
        ),
        ["claim", "approve", ..] => {
            assert_eq!(
                state().as_deref(),
                Some("APPROVED"),
                "README.md:{line}:\n{stdout}"
            );
            assert_eq!(
                record_value(stdout, "REVIEWER").as_deref(),
                Some("r.wang"),
                "README.md:{line}:\n{stdout}"
            );
        }
        ["round", "close", ..] => {
            assert_eq!(
                state().as_deref(),
                Some("CLOSED"),
                "README.md:{line}:\n{stdout}"
            );
        }
        ["ledger", "verify"] => assert!(stdout.contains("INTACT"), "README.md:{line}:\n{stdout}"),
        ["ledger", "verify", ..] => assert!(
            stdout.contains("compute-voucher-2025"),
            "README.md:{line}: the pool verified offline:\n{stdout}"
        ),
        ["history", ..] => assert!(
            stdout.contains("reviewer:r.wang"),
            "README.md:{line}:\n{stdout}"
        ),
        ["objection", "file", ..] => {
            assert_eq!(
                state().as_deref(),
                Some("OPEN"),
                "README.md:{line}:\n{stdout}"
            );
        }
        ["objection", "decide", ..] => {
            let decided = if words.contains(&"--uphold") {
                "UPHELD"
            } else {
                "DISMISSED"
            };
            assert_eq!(
                state().as_deref(),
                Some(decided),
                "README.md:{line}:\n{stdout}"
            );
        }
        _ => {}
    }
}

/// Whether `package` (a version of buf) runs from npm's cache, without the network.
fn buf_cached(package: &str) -> bool {
    Command::new("npx")
        .args(["--offline", "--yes", package, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether a block files an objection (and so needs an open publicity period).
fn files_objections(block: &[(Shown, Step)]) -> bool {
    block
        .iter()
        .any(|(_, step)| matches!(step, Step::Ctl(args) if args.starts_with(&["objection".to_owned(), "file".to_owned()])))
}

#[test]
fn every_command_of_every_shell_block_of_the_readme_runs_against_a_fresh_dev_stack() {
    let readme = readme();
    let (setting, days) = PUBLICITY_OVERRIDE;
    assert!(
        readme.contains(&format!("`{setting}={days}`")),
        "the README tells how to try objections with {setting}={days}"
    );
    let blocks = readme_steps(&readme);
    assert!(blocks.len() >= 5, "the README's shell blocks: {blocks:?}");
    let bufs: BTreeMap<String, bool> = blocks
        .iter()
        .flatten()
        .filter_map(|(_, step)| match step {
            Step::Buf { package, .. } => Some(package.clone()),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|package| {
            let cached = buf_cached(&package);
            (package, cached)
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let mut dev = Dev::start(&dir.path().join("data"));
    dev.wait_serving();
    let mut main = Session::new(&dev, dir.path().join("scratch"), &bufs);
    let mut skipped = Vec::new();
    let mut objections_run = false;
    for (index, block) in blocks.iter().enumerate() {
        if !files_objections(block) {
            for (shown, step) in block {
                main.run(shown, step);
            }
            continue;
        }
        // The objection walkthrough: on a stack whose awards stay in publicity, after the
        // README's commands up to its first approval.
        let publicity_dir = tempfile::tempdir().unwrap();
        let mut publicity =
            Dev::start_with_env(&publicity_dir.path().join("data"), &[PUBLICITY_OVERRIDE]);
        publicity.wait_serving();
        let mut session = Session::new(&publicity, publicity_dir.path().join("scratch"), &bufs);
        let mut approved = false;
        for (shown, step) in blocks[..index].iter().flatten() {
            if matches!(step, Step::Alias | Step::Ctl(_)) {
                session.run(shown, step);
            }
            if matches!(step, Step::Ctl(args) if args.starts_with(&["claim".to_owned(), "approve".to_owned()]))
            {
                approved = true;
                break;
            }
        }
        assert!(
            approved,
            "the README approves a claim before objecting to it"
        );
        for (shown, step) in block {
            session.run(shown, step);
        }
        // The upheld objection revoked the claim, as the block's comment says.
        let claim_id = session.ids["CLAIM_ID"].clone();
        let shown = publicity.run(&["claim".to_owned(), "show".to_owned(), claim_id]);
        let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
        assert_eq!(
            record_value(&shown, "STATE").as_deref(),
            Some("REVOKED"),
            "{shown}"
        );
        skipped.append(&mut session.skipped);
        objections_run = true;
    }
    assert!(objections_run, "the README walks through an objection");
    assert!(main.watched, "the README follows the event stream");
    skipped.append(&mut main.skipped);
    eprintln!("README lines not run:\n{}", skipped.join("\n"));
}

/// The `subsidyctl` commands the README's prose names in inline code (outside the blocks),
/// each split into its arguments: `[…]` marks dropped, `a|b` alternatives each a command, a
/// pipe and a last `…` cut off.
fn prose_commands(readme: &str) -> Vec<Vec<String>> {
    let mut prose = String::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let mut commands = Vec::new();
    for span in prose.split('`').skip(1).step_by(2) {
        let span = span.replace('\n', " ");
        let Some(rest) = span.strip_prefix("subsidyctl ") else {
            continue;
        };
        let words = shlex::split(&rest.replace(['[', ']'], ""))
            .unwrap_or_else(|| panic!("cannot split {span:?}"));
        let mut words: Vec<String> = words.into_iter().take_while(|word| word != "|").collect();
        if words.last().map(String::as_str) == Some("…") {
            words.pop();
        }
        match words.iter().position(|word| word.contains('|')) {
            Some(at) => {
                for alternative in words[at].split('|') {
                    let mut one = words.clone();
                    one[at] = alternative.to_owned();
                    commands.push(one);
                }
            }
            None => commands.push(words),
        }
    }
    commands
}

#[test]
fn every_subsidyctl_command_the_readme_prose_names_parses_with_its_options() {
    // Proves: each command named in the prose (outside the blocks the test above runs) exists
    // with the options it is shown with: `subsidyctl WORDS --help` exits 0.
    let commands = prose_commands(&readme());
    assert!(
        commands
            .iter()
            .any(|words| words.starts_with(&["claim".to_owned(), "reopen".to_owned()])),
        "the prose names claim reopen: {commands:?}"
    );
    for words in commands {
        let mut args = words.clone();
        if !args.iter().any(|word| word == "--help") {
            args.push("--help".to_owned());
        }
        let output = Command::new(env!("CARGO_BIN_EXE_subsidyctl"))
            .args(&args)
            .current_dir(repo_root())
            .output()
            .expect("run subsidyctl");
        assert!(
            output.status.success(),
            "`subsidyctl {}`, named in the README, does not parse: {}",
            words.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
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
