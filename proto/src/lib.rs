//! The subsidy v1 gRPC contract: Rust generated from `proto/`, the descriptor set for server
//! reflection, and the helpers that build `tonic::Status` values with `google.rpc` details.
#![forbid(unsafe_code)]
#![allow(clippy::doc_lazy_continuation, clippy::large_enum_variant)]

pub mod google {
    /// Vendored `google.type` messages (`Money`, `Date`).
    pub mod r#type {
        tonic::include_proto!("google.r#type");
    }
}

pub mod subsidy {
    pub mod access {
        pub mod v1 {
            tonic::include_proto!("subsidy.access.v1");
        }
    }
    pub mod audit {
        pub mod v1 {
            tonic::include_proto!("subsidy.audit.v1");
        }
    }
    pub mod application {
        pub mod v1 {
            tonic::include_proto!("subsidy.application.v1");
        }
    }
    pub mod budget {
        pub mod v1 {
            tonic::include_proto!("subsidy.budget.v1");
        }
    }
    pub mod notification {
        pub mod v1 {
            tonic::include_proto!("subsidy.notification.v1");
        }
    }
    pub mod rules {
        pub mod v1 {
            tonic::include_proto!("subsidy.rules.v1");
        }
    }
}

pub use crate::subsidy::audit::v1 as audit;
pub use crate::subsidy::{application::v1 as application, budget::v1 as budget};
pub use crate::subsidy::{notification::v1 as notification, rules::v1 as rules};

/// The encoded `FileDescriptorSet` for server reflection: every subsidy `.proto` file, the vendored
/// `google.type` values, the `google.rpc` error details and status that failures carry (so that
/// tools resolving `Any` through reflection, such as grpcurl, decode `grpc-status-details-bin`),
/// and the well-known types they import.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/subsidy_descriptor.bin"));

/// The fully-qualified names of the four services, as health and reflection report them.
pub const SERVICE_NAMES: [&str; 4] = [
    "subsidy.application.v1.ApplicationService",
    "subsidy.rules.v1.RulesService",
    "subsidy.budget.v1.BudgetService",
    "subsidy.notification.v1.NotificationService",
];

pub mod access;
pub mod status;
