//! The daemon's Prometheus metrics as a test reads them.

use std::{collections::HashMap, net::SocketAddr};

use crate::{client::http_get, netns::Netns};

/// The API address the tests' daemons use.
pub fn api() -> SocketAddr {
    "127.0.0.1:62080".parse().unwrap()
}

/// Every sample of `/metrics`, keyed `name{label=value,...}` with the
/// labels sorted.
pub fn scrape(node: &Netns) -> HashMap<String, f64> {
    let (status, body) = http_get(Some(node), api(), "/metrics").expect("scrape");
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), v);
    }
    out
}

/// One sample of `/metrics`.
pub fn scrape_value(node: &Netns, key: &str) -> Option<f64> {
    scrape(node).get(key).copied()
}
