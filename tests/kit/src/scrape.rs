//! Reading a service's Prometheus scrape endpoint as Prometheus does (`GET /metrics` over plain
//! HTTP/1.1), parsed with a Prometheus text-format parser.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A port free on 127.0.0.1 a moment ago (for a service to bind right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on `127.0.0.1:port`: the status code and the body.
pub async fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the metrics port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// The samples of a scrape of `127.0.0.1:port`.
pub async fn scrape(port: u16) -> Vec<prometheus_parse::Sample> {
    let (status, body) = get(port, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .expect("the exposition parses as the Prometheus text format")
        .samples
}

/// The value of `metric` with `labels` (all of them; others may be present) in `samples`.
pub fn value(
    samples: &[prometheus_parse::Sample],
    metric: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|sample| {
            sample.metric == metric
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| match sample.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{metric} is not a single value: {other:?}"),
        })
}
