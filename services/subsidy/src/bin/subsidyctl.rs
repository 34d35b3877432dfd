//! `subsidyctl`: talks to the subsidy services for people. See `subsidyctl --help`.

use std::process::ExitCode;

use clap::Parser;
use subsidy::ctl::{self, Cli, errors};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // A wrong command line exits with 2 (clap's usage code), before anything is sent.
    let cli = Cli::parse();
    match ctl::run(cli.command, &cli.ctx).await {
        Ok(()) => ExitCode::from(errors::exit::OK),
        Err(error) => {
            let (text, code) = errors::report(error.as_ref());
            eprintln!("subsidyctl: {text}");
            ExitCode::from(code)
        }
    }
}
