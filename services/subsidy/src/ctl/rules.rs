//! `subsidyctl` commands of the rules service.

use clap::Subcommand;
use subsidy_common::BoxError;

use super::Ctx;

/// Commands of the rules service.
#[derive(Subcommand, Debug)]
pub enum Command {}

/// Runs a command.
pub async fn run(command: Command, _ctx: &Ctx) -> Result<(), BoxError> {
    match command {}
}
