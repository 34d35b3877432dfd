//! `subsidyctl`: talks to the subsidy services for people. See `subsidyctl --help`.

use std::process::ExitCode;

use clap::Parser;
use subsidy::ctl::{self, Command, Ctx};

#[derive(Parser, Debug)]
#[command(
    name = "subsidyctl",
    version,
    about = "Operate the Shandong subsidy services"
)]
struct Cli {
    #[command(flatten)]
    ctx: Ctx,
    #[command(subcommand)]
    command: Command,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match ctl::run(cli.command, &cli.ctx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("subsidyctl: {error}");
            ExitCode::FAILURE
        }
    }
}
