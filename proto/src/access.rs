//! The access rule of every RPC, as declared next to the RPC in the proto
//! (`option (subsidy.access.v1.access)`), compiled into a table at build time. The shared
//! enforcement layer (`subsidy_common::admission`) reads only this table: an RPC is callable by a
//! role or a service only where its declaration says so.

pub use crate::subsidy::access::v1::{Role, Service};

/// Who may call one RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MethodAccess {
    /// The gRPC path, `/package.Service/Method`.
    pub path: &'static str,
    /// Roles of people and agency systems allowed to call it.
    pub roles: &'static [Role],
    /// Services of this system allowed to call it (by their mutual-TLS identity).
    pub services: &'static [Service],
    /// Whether it changes state (rate-limited and audited).
    pub mutating: bool,
    /// Whether it answers with a stream.
    pub server_streaming: bool,
}

include!(concat!(env!("OUT_DIR"), "/access_rules.rs"));

/// The access rule of the RPC at `path`, if it has one.
pub fn rule(path: &str) -> Option<&'static MethodAccess> {
    METHODS
        .binary_search_by(|rule| rule.path.cmp(path))
        .ok()
        .map(|index| &METHODS[index])
}

impl MethodAccess {
    /// The method's name (the last part of the path).
    pub fn method(&self) -> &'static str {
        self.path.rsplit('/').next().unwrap_or(self.path)
    }

    /// The full name of the service the method belongs to.
    pub fn service_name(&self) -> &'static str {
        self.path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default()
    }
}

impl Role {
    /// The role's name in tokens and documents: `applicant`, `reviewer`, ….
    pub fn claim_name(self) -> &'static str {
        match self {
            Role::Unspecified => "",
            Role::Applicant => "applicant",
            Role::Reviewer => "reviewer",
            Role::Expert => "expert",
            Role::Finance => "finance",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Every role a person or agency system can hold.
    pub const ALL: [Role; 6] = [
        Role::Applicant,
        Role::Reviewer,
        Role::Expert,
        Role::Finance,
        Role::Auditor,
        Role::Admin,
    ];

    /// The role named `name` in a token.
    pub fn from_claim_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.claim_name() == name)
    }
}

impl Service {
    /// The service's short name: `application`, `rules`, `budget`, `notification`.
    pub fn short_name(self) -> &'static str {
        match self {
            Service::Unspecified => "",
            Service::Application => "application",
            Service::Rules => "rules",
            Service::Budget => "budget",
            Service::Notification => "notification",
        }
    }

    /// Every service of the system.
    pub const ALL: [Service; 4] = [
        Service::Application,
        Service::Rules,
        Service::Budget,
        Service::Notification,
    ];

    /// The service named `name`.
    pub fn from_short_name(name: &str) -> Option<Service> {
        Service::ALL
            .into_iter()
            .find(|service| service.short_name() == name)
    }

    /// The workload identity in the service's certificate (a URI SAN).
    pub fn spiffe_id(self) -> String {
        format!("{}{}", SPIFFE_PREFIX, self.short_name())
    }
}

/// The prefix of a service's URI SAN: `spiffe://subsidy/<service>`.
pub const SPIFFE_PREFIX: &str = "spiffe://subsidy/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_has_a_rule_and_the_table_is_sorted_for_lookup() {
        // Proves the generated table covers the four services and finds rules by path.
        assert!(METHODS.windows(2).all(|pair| pair[0].path < pair[1].path));
        let reserve = rule("/subsidy.budget.v1.BudgetService/Reserve").expect("Reserve has a rule");
        assert_eq!(reserve.services, &[Service::Application]);
        assert!(reserve.roles.is_empty() && reserve.mutating);
        assert_eq!(reserve.method(), "Reserve");
        assert_eq!(reserve.service_name(), "subsidy.budget.v1.BudgetService");
        assert!(rule("/subsidy.budget.v1.BudgetService/Nope").is_none());
        for role in Role::ALL {
            assert_eq!(Role::from_claim_name(role.claim_name()), Some(role));
        }
    }
}
