//! `subsidyctl` commands of the application service.

use clap::Subcommand;
use subsidy_common::BoxError;

use super::Ctx;

/// Commands of the application service.
#[derive(Subcommand, Debug)]
pub enum Command {}

/// Runs a command.
pub async fn run(command: Command, _ctx: &Ctx) -> Result<(), BoxError> {
    match command {}
}
