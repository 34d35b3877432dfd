//! The named bounds and defaults of the shared sections, each with its unit.

/// Default request timeout of every RPC, in milliseconds.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Shortest request timeout accepted, in milliseconds.
pub const REQUEST_TIMEOUT_MS_MIN: u64 = 100;
/// Longest request timeout accepted, in milliseconds.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 600_000;
/// Default time granted to in-flight calls after SIGTERM, in milliseconds.
pub const SHUTDOWN_GRACE_MS_DEFAULT: u64 = 20_000;
/// Shortest shutdown grace accepted, in milliseconds (none: stop at once).
pub const SHUTDOWN_GRACE_MS_MIN: u64 = 0;
/// Longest shutdown grace accepted, in milliseconds.
pub const SHUTDOWN_GRACE_MS_MAX: u64 = 600_000;
/// Default largest accepted or sent gRPC message, in bytes.
pub const MESSAGE_SIZE_MAX_BYTES_DEFAULT: usize = 4 * 1024 * 1024;
/// Smallest message-size limit accepted, in bytes.
pub const MESSAGE_SIZE_MAX_BYTES_MIN: usize = 4096;
/// Largest message-size limit accepted, in bytes.
pub const MESSAGE_SIZE_MAX_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Default concurrent calls per connection.
pub const CONCURRENCY_PER_CONNECTION_DEFAULT: usize = 256;
/// Smallest concurrency per connection accepted.
pub const CONCURRENCY_PER_CONNECTION_MIN: usize = 1;
/// Largest concurrency per connection accepted.
pub const CONCURRENCY_PER_CONNECTION_MAX: usize = 100_000;
/// Longest life of a client's connection accepted, in milliseconds (0: none; the default).
pub const MAX_CONNECTION_AGE_MS_DEFAULT: u64 = 0;
/// Shortest connection life accepted when one is set, in milliseconds.
pub const MAX_CONNECTION_AGE_MS_MIN: u64 = 100;
/// Longest connection life accepted, in milliseconds.
pub const MAX_CONNECTION_AGE_MS_MAX: u64 = 86_400_000;
/// Default time a request's idempotency record is kept (its replay window), in milliseconds:
/// 30 days.
pub const REQUEST_RETENTION_MS_DEFAULT: u64 = 30 * 86_400_000;
/// Shortest replay window accepted, in milliseconds.
pub const REQUEST_RETENTION_MS_MIN: u64 = 1_000;
/// Longest replay window accepted, in milliseconds: ten years.
pub const REQUEST_RETENTION_MS_MAX: u64 = 3_650 * 86_400_000;
/// Default interval between two pruning rounds, in milliseconds: an hour.
pub const PRUNE_INTERVAL_MS_DEFAULT: u64 = 3_600_000;
/// Shortest pruning interval accepted, in milliseconds.
pub const PRUNE_INTERVAL_MS_MIN: u64 = 100;
/// Longest pruning interval accepted, in milliseconds: a day.
pub const PRUNE_INTERVAL_MS_MAX: u64 = 86_400_000;
/// Default rows deleted per statement (and transaction) when pruning.
pub const PRUNE_BATCH_DEFAULT: u32 = 1_000;
/// Fewest rows per pruning batch accepted.
pub const PRUNE_BATCH_MIN: u32 = 1;
/// Most rows per pruning batch accepted.
pub const PRUNE_BATCH_MAX: u32 = 100_000;
/// Shortest interval between two resolutions of the peers' hosts accepted, in milliseconds.
pub const PEERS_RESOLVE_INTERVAL_MS_MIN: u64 = 100;
/// Longest interval between two resolutions of the peers' hosts accepted, in milliseconds.
pub const PEERS_RESOLVE_INTERVAL_MS_MAX: u64 = 600_000;
/// Default interval between two readiness checks of the service's database, in milliseconds.
pub const READINESS_INTERVAL_MS_DEFAULT: u64 = 1_000;
/// Shortest readiness interval accepted, in milliseconds.
pub const READINESS_INTERVAL_MS_MIN: u64 = 100;
/// Longest readiness interval accepted, in milliseconds.
pub const READINESS_INTERVAL_MS_MAX: u64 = 60_000;
/// Default time the database has to answer a readiness check, in milliseconds.
pub const READINESS_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Shortest readiness timeout accepted, in milliseconds.
pub const READINESS_TIMEOUT_MS_MIN: u64 = 100;
/// Longest readiness timeout accepted, in milliseconds.
pub const READINESS_TIMEOUT_MS_MAX: u64 = 60_000;
/// The value of `telemetry.metrics_listen` that serves no scrape endpoint.
pub const METRICS_OFF: &str = "off";
/// Default size of a service's database pool.
pub const DATABASE_MAX_CONNECTIONS_DEFAULT: u32 = 16;
/// Smallest database pool accepted.
pub const DATABASE_MAX_CONNECTIONS_MIN: u32 = 1;
/// Largest database pool accepted.
pub const DATABASE_MAX_CONNECTIONS_MAX: u32 = 1000;
/// Default wait for a database connection, in milliseconds.
pub const DATABASE_ACQUIRE_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Shortest wait for a database connection accepted, in milliseconds.
pub const DATABASE_ACQUIRE_TIMEOUT_MS_MIN: u64 = 100;
/// Longest wait for a database connection accepted, in milliseconds.
pub const DATABASE_ACQUIRE_TIMEOUT_MS_MAX: u64 = 600_000;
