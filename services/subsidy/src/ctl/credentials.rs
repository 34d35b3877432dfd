//! `subsidyctl certs dev DIR` and `subsidyctl token dev`: development credentials. Production
//! certificates come from the province's CA and tokens from its identity provider.

use std::path::PathBuf;

use clap::Subcommand;
use subsidy_common::BoxError;
use subsidy_common::auth::dev::{self, DevPaths};
use subsidy_proto::access::Role;

use super::Ctx;

/// `certs …`.
#[derive(Subcommand, Debug)]
pub enum Certs {
    /// Write a development CA, a certificate per service and a token-signing key with its JWKS
    /// under DIR (`DIR/pki`, `DIR/auth`); refuses to overwrite an existing set.
    Dev {
        /// The directory.
        dir: PathBuf,
        /// Extra DNS names or IP addresses for every service certificate (e.g. Kubernetes
        /// service names); repeatable.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
}

/// `token …`.
#[derive(Subcommand, Debug)]
pub enum Token {
    /// Print a development token signed by the dev key under `--data-dir`.
    Dev {
        /// A role the token holds; repeatable.
        #[arg(long = "role", required = true, value_parser = role)]
        roles: Vec<Role>,
        /// An enterprise (USCC) an applicant acts for; repeatable.
        #[arg(long = "enterprise")]
        enterprises: Vec<String>,
        /// The expert an `expert` scores as.
        #[arg(long)]
        expert: Option<String>,
        /// The token's subject.
        #[arg(long, default_value = "dev-user")]
        subject: String,
    },
}

fn role(name: &str) -> Result<Role, String> {
    Role::from_claim_name(name).ok_or_else(|| {
        let names: Vec<&str> = Role::ALL.iter().map(|role| role.claim_name()).collect();
        format!("unknown role {name:?}; one of: {}", names.join(", "))
    })
}

/// Runs `certs …`.
pub fn certs(command: Certs) -> Result<(), BoxError> {
    match command {
        Certs::Dev { dir, hosts } => {
            let paths = DevPaths::new(&dir);
            if paths.ca().exists() {
                return Err(format!(
                    "{} holds credentials already; remove it first",
                    paths.ca().display()
                )
                .into());
            }
            dev::write_all(&dir, &hosts)?;
            outln!(
                "wrote the development CA, service certificates and signing key under {}",
                dir.display()
            );
            Ok(())
        }
    }
}

/// Runs `token …`.
pub fn token(command: Token, ctx: &Ctx) -> Result<(), BoxError> {
    match command {
        Token::Dev {
            roles,
            enterprises,
            expert,
            subject,
        } => {
            let key = DevPaths::new(&ctx.data_dir).load_signing_key()?;
            outln!(
                "{}",
                dev::mint(&key, &subject, &roles, &enterprises, expert.as_deref())?
            );
            Ok(())
        }
    }
}
