//! The `google.rpc` files vendored for reflection describe exactly the messages the services
//! encode: the build generates no Rust for them (`extern_path` to tonic-types), so the two must
//! not drift apart, or a tool decoding with the reflected descriptors would misread a detail.

use prost_reflect::{DescriptorPool, MessageDescriptor};

/// Each `google.rpc` message of `pool` with its fields (number, name, cardinality, type).
fn rpc_messages(pool: &DescriptorPool) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<_> = pool
        .all_messages()
        .filter(|message| message.package_name() == "google.rpc")
        .map(|message: MessageDescriptor| {
            let fields = message
                .fields()
                .map(|field| {
                    format!(
                        "{} {} {:?} {:?}",
                        field.number(),
                        field.name(),
                        field.cardinality(),
                        field.kind()
                    )
                })
                .collect();
            (message.full_name().to_owned(), fields)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_reflected_error_details_match_the_messages_tonic_types_encodes() {
    // Proves: every message (and field) of tonic-types' `google.rpc` descriptors, the types
    // behind the statuses the services build, is in the descriptor set served by reflection,
    // with the same numbers, names and types, and reflection serves no other `google.rpc` message.
    let served = DescriptorPool::decode(subsidy_proto::FILE_DESCRIPTOR_SET).expect("decodes");
    let encoded = DescriptorPool::decode(tonic_types::pb::FILE_DESCRIPTOR_SET).expect("decodes");
    let served = rpc_messages(&served);
    assert!(
        served
            .iter()
            .any(|(name, _)| name == "google.rpc.ErrorInfo"),
        "{served:?}"
    );
    assert_eq!(served, rpc_messages(&encoded));
}
