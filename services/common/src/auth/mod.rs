//! Identity and access: who is calling, and whether the proto's declaration of the RPC lets
//! them.
//!
//! - A **service** of this system is recognised by its mutual-TLS certificate
//!   ([`crate::tls`]); an **agency system** may present a certificate of the agencies' CA; a
//!   **person** (or an agency system without a certificate) sends `authorization: Bearer
//!   <JWT>` ([`token`]).
//! - Every RPC declares the roles and services it admits next to itself in the proto
//!   (`subsidy_proto::access`). [`crate::admission::AuthLayer`] enforces that for all four services,
//!   deny by default, rate-limits mutating calls per caller, and hands the handler an
//!   [`Caller`] in the request's extensions. Handlers never read identity from anywhere else.
//! - The application acts for the person who called it: it sends
//!   `x-subsidy-on-behalf-of: <role>:<subject>` to the budget and rules services, which believe
//!   it only when the mutual-TLS peer is the application.
//! - Tenants: an applicant sees and touches only its own enterprises ([`Caller::tenant`]);
//!   another tenant's object is answered `NOT_FOUND`, never `PERMISSION_DENIED`.

pub mod dev;
pub mod token;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use subsidy_proto::access::{MethodAccess, Role, Service};

/// Metadata key carrying the person a service acts for: `<role>:<subject>`.
pub const ON_BEHALF_OF_METADATA_KEY: &str = "x-subsidy-on-behalf-of";
/// Metadata key naming the calling service when the process runs without TLS (`--insecure`,
/// loopback only): believed only in that mode.
pub const INSECURE_SERVICE_METADATA_KEY: &str = "x-subsidy-insecure-service";

tokio::task_local! {
    /// The person the call being handled acts for (`<role>:<subject>`), set by the access
    /// layer around each handler and read by [`crate::security::PeerCall`].
    static ACTING_FOR: Option<String>;
}

/// Runs `future` acting for `person` (`<role>:<subject>`, see
/// [`Caller::on_behalf_of_value`]): calls it makes to peer services say whom they act for.
pub async fn acting_for<F: std::future::Future>(person: Option<String>, future: F) -> F::Output {
    ACTING_FOR.scope(person, future).await
}

/// The person the call being handled acts for, if any.
pub fn acting_for_now() -> Option<String> {
    ACTING_FOR.try_with(Clone::clone).ok().flatten()
}

/// What kind of caller a principal is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person, by bearer token.
    Person,
    /// An agency system, by its client certificate.
    Agency,
    /// A service of this system, by its mutual-TLS certificate.
    Service(Service),
}

/// A person a service acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnBehalfOf {
    /// The person's role in the original call.
    pub role: String,
    /// The person's subject.
    pub subject: String,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// What kind of caller.
    pub kind: PrincipalKind,
    /// Who: the token's subject, the agency's certificate name, or the service's name.
    pub subject: String,
    /// Roles held (none for a service).
    pub roles: Vec<Role>,
    /// Enterprises (USCCs) an applicant acts for.
    pub enterprises: BTreeSet<String>,
    /// The expert an `expert` scores as.
    pub expert_id: Option<String>,
    /// For a service: the person it acts for, if it said so.
    pub on_behalf_of: Option<OnBehalfOf>,
}

impl Principal {
    /// A service acting on its own.
    pub fn service(service: Service) -> Principal {
        Principal {
            kind: PrincipalKind::Service(service),
            subject: service.short_name().to_owned(),
            roles: Vec::new(),
            enterprises: BTreeSet::new(),
            expert_id: None,
            on_behalf_of: None,
        }
    }

    /// The role under which `rule` admits this principal: roles that see every tenant are
    /// preferred over tenant-bound ones; `None` when no role it holds is admitted.
    pub fn admitted_role(&self, rule: &MethodAccess) -> Option<Role> {
        const PREFERENCE: [Role; 6] = [
            Role::Admin,
            Role::Reviewer,
            Role::Finance,
            Role::Auditor,
            Role::Expert,
            Role::Applicant,
        ];
        PREFERENCE
            .into_iter()
            .find(|role| self.roles.contains(role) && rule.roles.contains(role))
    }

    /// The key idempotency records and rate limits are kept under: two callers never share
    /// one.
    pub fn scope(&self) -> String {
        match &self.kind {
            PrincipalKind::Person => format!("user:{}", self.subject),
            PrincipalKind::Agency => format!("agency:{}", self.subject),
            PrincipalKind::Service(service) => format!("service:{}", service.short_name()),
        }
    }
}

/// Which tenants a call may see and touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenant {
    /// Every tenant (staff roles and services).
    All,
    /// Only these enterprises (an applicant).
    Enterprises(BTreeSet<String>),
}

impl Tenant {
    /// Whether the enterprise `uscc` is visible.
    pub fn sees(&self, uscc: &str) -> bool {
        match self {
            Tenant::All => true,
            Tenant::Enterprises(own) => own.contains(uscc),
        }
    }

    /// The enterprises a list must be restricted to, or `None` for no restriction.
    pub fn restriction(&self) -> Option<&BTreeSet<String>> {
        match self {
            Tenant::All => None,
            Tenant::Enterprises(own) => Some(own),
        }
    }
}

/// The authenticated caller of one RPC, admitted by the RPC's rule: what handlers read.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who.
    pub principal: Arc<Principal>,
    /// The role under which the call is admitted (`None` for a service).
    pub role: Option<Role>,
    /// The RPC's rule.
    pub rule: &'static MethodAccess,
    /// Where the call came from.
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// A caller for in-process use (background jobs acting as the service itself).
    pub fn internal(service: Service, rule: &'static MethodAccess) -> Caller {
        Caller {
            principal: Arc::new(Principal::service(service)),
            role: None,
            rule,
            peer: None,
        }
    }

    /// The caller as histories, ledgers and audit records name it: `reviewer:r.wang`,
    /// `agency:portal.example.cn`, `service:application`, or
    /// `service:application for reviewer:r.wang`.
    pub fn actor(&self) -> String {
        let principal = &self.principal;
        match &principal.kind {
            PrincipalKind::Service(service) => match &principal.on_behalf_of {
                Some(person) => format!(
                    "service:{} for {}:{}",
                    service.short_name(),
                    person.role,
                    person.subject
                ),
                None => format!("service:{}", service.short_name()),
            },
            PrincipalKind::Agency => format!("agency:{}", principal.subject),
            PrincipalKind::Person => format!(
                "{}:{}",
                self.role.map(Role::claim_name).unwrap_or("person"),
                principal.subject
            ),
        }
    }

    /// The role name recorded beside the actor (`service` for a service).
    pub fn role_name(&self) -> &'static str {
        match self.role {
            Some(role) => role.claim_name(),
            None => "service",
        }
    }

    /// What this call may see: every tenant, or the applicant's enterprises.
    pub fn tenant(&self) -> Tenant {
        match self.role {
            Some(Role::Applicant) => Tenant::Enterprises(self.principal.enterprises.clone()),
            _ => Tenant::All,
        }
    }

    /// The key idempotency records are kept under for `request_id`: scoped to the caller, so
    /// two callers using the same request id never meet.
    pub fn idempotency_key(&self, request_id: &str) -> String {
        crate::idempotency::scoped(&self.principal.scope(), request_id)
    }

    /// The `<role>:<subject>` a service passes on when it calls another service for this
    /// caller; `None` for a service acting on its own.
    pub fn on_behalf_of_value(&self) -> Option<String> {
        match &self.principal.kind {
            PrincipalKind::Service(_) => self
                .principal
                .on_behalf_of
                .as_ref()
                .map(|person| format!("{}:{}", person.role, person.subject)),
            PrincipalKind::Person | PrincipalKind::Agency => {
                Some(format!("{}:{}", self.role_name(), self.principal.subject))
            }
        }
    }

    /// The caller of a request, as the auth layer left it.
    pub fn of<T>(request: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
        request.extensions().get::<Caller>().ok_or_else(|| {
            // The layer runs before every handler: a missing caller is a wiring bug.
            tonic::Status::internal("internal error")
        })
    }
}
