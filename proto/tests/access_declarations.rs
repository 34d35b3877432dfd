//! Every RPC of the subsidy services declares who may call it, and the table the services
//! enforce is exactly what the proto declares.

use prost_reflect::{DescriptorPool, Value};
use subsidy_proto::FILE_DESCRIPTOR_SET;
use subsidy_proto::access::{self, Role, Service};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the descriptor set decodes")
}

#[test]
fn every_method_of_every_subsidy_service_declares_its_access() {
    // Proves: walking the descriptor set served by reflection, each method of each subsidy
    // service carries the (subsidy.access.v1.access) option, and the compiled table holds the
    // same roles, services and mutating flag for it (and nothing else).
    let pool = pool();
    let extension = pool
        .get_extension_by_name("subsidy.access.v1.access")
        .expect("the access option is declared");
    let mut seen = Vec::new();
    for service in pool.services() {
        if !service.full_name().starts_with("subsidy.") {
            continue;
        }
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let options = method.options();
            assert!(
                options.has_extension(&extension),
                "{path} declares no (subsidy.access.v1.access) option"
            );
            let declared = options.get_extension(&extension);
            let declared = declared.as_message().expect("Access is a message");
            let numbers = |field: &str| -> Vec<i32> {
                declared
                    .get_field_by_name(field)
                    .and_then(|value| value.as_list().map(<[Value]>::to_vec))
                    .unwrap_or_default()
                    .iter()
                    .filter_map(Value::as_enum_number)
                    .collect()
            };
            let rule = access::rule(&path)
                .unwrap_or_else(|| panic!("{path} is missing from the compiled table"));
            let roles: Vec<i32> = rule.roles.iter().map(|role| *role as i32).collect();
            let services: Vec<i32> = rule.services.iter().map(|s| *s as i32).collect();
            assert_eq!(roles, numbers("roles"), "{path}: roles");
            assert_eq!(services, numbers("services"), "{path}: services");
            let mutating = declared
                .get_field_by_name("mutating")
                .and_then(|value| value.as_bool())
                .unwrap_or(false);
            assert_eq!(rule.mutating, mutating, "{path}: mutating");
            assert!(
                !rule.roles.is_empty() || !rule.services.is_empty(),
                "{path} admits nobody"
            );
            seen.push(path);
        }
    }
    seen.sort();
    let table: Vec<&str> = access::METHODS.iter().map(|rule| rule.path).collect();
    assert_eq!(seen, table, "the table holds exactly the declared methods");
    assert!(seen.len() >= 60, "all five services' methods are declared");
}

#[test]
fn only_the_application_moves_money_and_publishes_events() {
    // Proves the service rules hold in the declarations: only the application may call
    // budget Reserve/Commit/Release/ExtendReservation/RevokeCommitment and the rules evaluations, only the application and the
    // budget (its ledger checkpoints) notification PublishEvent, and no person holds those
    // methods; an auditor lists checkpoints, only an admin makes one.
    for path in [
        "/subsidy.notification.v1.NotificationService/PublishEvent",
        "/subsidy.notification.v1.NotificationService/PublishEvents",
    ] {
        let publish = access::rule(path).expect("declared");
        assert_eq!(publish.services, &[Service::Application, Service::Budget]);
        assert!(publish.roles.is_empty());
    }
    let create =
        access::rule("/subsidy.budget.v1.BudgetService/CreateCheckpoint").expect("declared");
    assert_eq!((create.roles, create.mutating), (&[Role::Admin][..], true));
    let list = access::rule("/subsidy.budget.v1.BudgetService/ListCheckpoints").expect("declared");
    assert!(list.roles.contains(&Role::Auditor) && !list.mutating);
    for path in [
        "/subsidy.budget.v1.BudgetService/Reserve",
        "/subsidy.budget.v1.BudgetService/Commit",
        "/subsidy.budget.v1.BudgetService/Release",
        "/subsidy.budget.v1.BudgetService/ExtendReservation",
        "/subsidy.budget.v1.BudgetService/RevokeCommitment",
        "/subsidy.rules.v1.RulesService/EvaluateComputeVoucher",
        "/subsidy.rules.v1.RulesService/EvaluateDataInfraProposal",
        "/subsidy.rules.v1.RulesService/RankSelectionRound",
    ] {
        let rule = access::rule(path).expect("declared");
        assert_eq!(rule.services, &[Service::Application], "{path}");
        assert!(rule.roles.is_empty(), "{path}");
    }
    let approve =
        access::rule("/subsidy.application.v1.ApplicationService/ApproveClaim").expect("declared");
    assert_eq!(approve.roles, &[Role::Reviewer]);
    let verify = access::rule("/subsidy.budget.v1.BudgetService/VerifyLedger").expect("declared");
    assert!(verify.roles.contains(&Role::Auditor) && !verify.mutating);
}
