//! Waiting for asynchronous outcomes without fixed sleeps.

use std::time::Duration;

/// Longest wait for an asynchronous outcome, in milliseconds.
pub const WAIT_MS_MAX: u64 = 60_000;
/// Pause between two looks at an asynchronous outcome, in milliseconds.
pub const POLL_MS: u64 = 25;

/// Polls `probe` until it returns `Some`, failing the test after [`WAIT_MS_MAX`].
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS_MAX);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}
