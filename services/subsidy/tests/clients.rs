//! The client examples of `docs/clients/` (Python, Java, Go) run against a fresh `subsidy dev`
//! as an agency runs them: generated stubs, TLS trusting the dev CA, bearer tokens from
//! `subsidyctl token dev`. Each must exit 0 and print the steps it checked. Their toolchains are
//! installed by `scripts/test` (its step `ensure_client_toolchains`); a missing one fails the
//! test naming that step, it never skips.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Dev, repo_root};

/// How long one example may take, stub generation and compilation included (the Java one
/// compiles about 80 generated files on a busy machine).
const EXAMPLE_WAIT_S: u64 = 300;

/// The USCC the examples register and claim for.
const USCC: &str = "91370100MA3C00001H";

/// What to tell when a prerequisite is missing.
const INSTALL_STEP: &str = "scripts/test installs it (step ensure_client_toolchains); run \
     scripts/test, or that step's commands, first";

/// A dev stack that may deliver webhooks to a plain-http receiver on loopback (each example's
/// receiver), up and serving.
fn dev_stack(data_dir: &Path) -> Dev {
    let mut dev = Dev::start_with_env(data_dir, &[("SUBSIDY_NOTIFICATION_ALLOW_HTTP", "true")]);
    dev.wait_serving();
    dev
}

/// A development token from `subsidyctl token dev ARGS`.
fn token(dev: &Dev, args: &[&str]) -> String {
    let mut all = vec!["token".to_owned(), "dev".to_owned()];
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    let output = dev.run(&all);
    assert!(
        output.status.success(),
        "subsidyctl token dev {args:?} failed"
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Fails, naming the `scripts/test` step, unless `program args` runs and exits 0.
fn require(what: &str, program: &str, args: &[&str]) {
    let ok = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{what} is missing ({program} {args:?} failed): {INSTALL_STEP}"
    );
}

/// Runs `program args` from the repository root with the stack's addresses, CA and tokens in
/// its environment, and returns its output after asserting that it exited 0 in time.
fn run_example(dev: &Dev, program: &str, args: &[&str]) -> String {
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .env(
            "SUBSIDY_APPLICATION_ADDR",
            format!("127.0.0.1:{}", dev.ports[0]),
        )
        .env(
            "SUBSIDY_NOTIFICATION_ADDR",
            format!("127.0.0.1:{}", dev.ports[3]),
        )
        .env("SUBSIDY_CA_FILE", dev.data_dir.join("pki/ca.crt"))
        .env(
            "SUBSIDY_APPLICANT_TOKEN",
            token(dev, &["--role", "applicant", "--enterprise", USCC]),
        )
        .env("SUBSIDY_ADMIN_TOKEN", token(dev, &["--role", "admin"]))
        .env_remove("SUBSIDY_INSECURE")
        .env_remove("SUBSIDY_PROTO_DIR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}; {INSTALL_STEP}"));
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    let deadline = started + Duration::from_secs(EXAMPLE_WAIT_S);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out.join().unwrap().unwrap_or_default();
    let stderr = err.join().unwrap().unwrap_or_default();
    let shown = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    let status =
        status.unwrap_or_else(|| panic!("{program} {args:?} ran over {EXAMPLE_WAIT_S} s\n{shown}"));
    assert!(
        status.success(),
        "{program} {args:?} exited with {status}\n{shown}"
    );
    eprintln!(
        "{program} {args:?} passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    stdout
}

/// Asserts that every line of `expected` appears in `output` (each as a substring of a line).
fn assert_lines(output: &str, expected: &[&str]) {
    for line in expected {
        assert!(
            output.lines().any(|printed| printed.contains(line)),
            "missing {line:?} in:\n{output}"
        );
    }
}

/// The checks all three examples make and print.
const CORE_LINES: &[&str] = &[
    "came back; nothing was filed twice",
    "ALREADY_EXISTS REQUEST_ID_REUSED",
    "PENDING_REVIEW: entitlement 100000.00 CNY at 500 bp, held 100000.00 CNY",
    "none repeated",
    "INVALID_ARGUMENT INVALID_ARGUMENT",
    "field uscc:",
    "NOT_FOUND CLAIM_NOT_FOUND",
    "metadata claim_id=claim-00000000-0000-7000-8000-000000000000",
    "zero is units 0, nanos 0; 0.01 CNY is 10000000 nanos; 0.001 CNY and 5000000 nanos are refused (finer than a fen)",
    "claim.submitted for claim-",
    "claim.reserved for claim-",
    "signature verified, a tampered copy rejected",
    "OK: every expectation held",
];

/// What the Java and Go examples print of their own webhook verifier (HMAC-SHA256 with the
/// standard library; Python uses the `standardwebhooks` package).
const VERIFIER_LINES: &[&str] = &[
    "the Standard Webhooks test vector verifies; a tampered body and a stale timestamp are refused",
];

#[test]
fn the_python_example_runs_against_a_fresh_dev_stack() {
    require(
        "Python's gRPC packages (grpcio grpcio-tools protobuf googleapis-common-protos standardwebhooks)",
        "python3",
        &[
            "-c",
            "import grpc, grpc_tools, google.rpc.error_details_pb2, google.type.money_pb2, standardwebhooks",
        ],
    );
    let data = tempfile::tempdir().unwrap();
    let dev = dev_stack(data.path());
    let output = run_example(&dev, "python3", &["docs/clients/python/example.py"]);
    assert_lines(&output, CORE_LINES);
    assert_lines(
        &output,
        &["approved_amount before review is zero; in proto3 JSON: {"],
    );
}

#[test]
fn the_java_example_runs_against_a_fresh_dev_stack() {
    require("a Java 17 compiler", "javac", &["-version"]);
    require("protoc", "protoc", &["--version"]);
    require(
        "the grpc-java protoc plugin",
        "test",
        &["-x", "/usr/bin/grpc_java_plugin"],
    );
    require(
        "Debian's grpc-java",
        "test",
        &["-f", "/usr/share/java/grpc-netty.jar"],
    );
    require(
        "Debian's netty",
        "test",
        &["-f", "/usr/share/java/netty-handler.jar"],
    );
    let data = tempfile::tempdir().unwrap();
    let dev = dev_stack(data.path());
    let output = run_example(&dev, "bash", &["docs/clients/java/run.sh"]);
    assert_lines(&output, CORE_LINES);
    assert_lines(&output, VERIFIER_LINES);
}

#[test]
fn the_go_example_runs_against_a_fresh_dev_stack() {
    require("Go", "go", &["version"]);
    require("protoc", "protoc", &["--version"]);
    require("protoc-gen-go", "protoc-gen-go", &["--version"]);
    require(
        "protoc-gen-go-grpc",
        "test",
        &["-x", "/usr/bin/protoc-gen-go-grpc"],
    );
    require(
        "Debian's grpc-go and genproto",
        "test",
        &[
            "-d",
            "/usr/share/gocode/src/google.golang.org/genproto/googleapis/rpc/errdetails",
        ],
    );
    let data = tempfile::tempdir().unwrap();
    let dev = dev_stack(data.path());
    let output = run_example(&dev, "bash", &["docs/clients/go/run.sh"]);
    assert_lines(&output, CORE_LINES);
    assert_lines(&output, VERIFIER_LINES);
}
