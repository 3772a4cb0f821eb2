//! Metrics, the HTTP API and health, scraped from the real daemon.

use std::{collections::HashMap, net::SocketAddr, time::Duration};
use tests::setup::{server, spartan_node};

use hickory_proto::rr::RecordType;
use tests::{
    client::{self, http_get, query_in, query_tcp_in},
    daemon::Spartan,
    metrics::scrape,
    netns::Netns,
    nsd::Nsd,
    pins::PinDir,
};

fn api() -> SocketAddr {
    "127.0.0.1:62080".parse().unwrap()
}

fn config(pins: &PinDir, self_check_ms: u64) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(tests::netns::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spartan.toml");
    std::fs::write(
        &path,
        format!(
            "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = [\"127.0.0.1:5353\", \"127.0.0.3:5353\"]\n\
upstream_timeout_ms = 300\nquery_deadline_ms = 1000\nself_check_interval_ms = {self_check_ms}\n\
[masters]\nstatic = [\"10.0.0.1\"]\n[xdp]\npin_dir = \"{}\"\ndetach_on_exit = true\n",
            pins.path().display()
        ),
    )
    .unwrap();
    path
}

/// Every sample of a scrape, keyed by name and sorted labels.
fn delta(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    let a = after.get(key).copied().unwrap_or_else(|| {
        panic!(
            "no sample {key}; have {:?}",
            after
                .keys()
                .filter(|k| k.starts_with(key.split('{').next().unwrap()))
                .collect::<Vec<_>>()
        )
    });
    a - before.get(key).copied().unwrap_or(0.0)
}

#[test]
fn root_metrics_count_a_known_sequence_exactly() {
    let node = spartan_node("spo");
    let pins = PinDir::new();
    let _nsd = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver-1");
    node.blackhole("127.0.0.3", 5353);
    let cfg = config(&pins, 3_600_000);
    let _s = Spartan::start(
        Some(&node),
        &["--config".into(), cfg.display().to_string()],
        server(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = scrape(&node);

    let t = Duration::from_secs(3);
    for _ in 0..3 {
        query_in(Some(&node), server(), "ready.spartan.", RecordType::A, t).unwrap();
    }
    for _ in 0..2 {
        query_tcp_in(Some(&node), server(), "zk-1.zk.", t).unwrap();
    }
    query_in(Some(&node), server(), "ready.spartan.", RecordType::AAAA, t).unwrap();
    for _ in 0..4 {
        let m = query_in(Some(&node), server(), "www.example.net.", RecordType::A, t).unwrap();
        assert_eq!(m.answers().len(), 1);
    }
    // Let the blackholed upstream's exchanges time out (300 ms).
    std::thread::sleep(Duration::from_millis(800));
    let after = scrape(&node);

    let d = |k: &str| delta(&before, &after, k);
    // ready.spartan three times, then www.example.net three times from the
    // kernel's mirror of the answer cache after its first, forwarded, miss.
    assert_eq!(d("spartan_kernel_total{counter=answered}"), 6.0);
    assert_eq!(d("spartan_kernel_total{counter=answered_from_cache}"), 3.0);
    assert_eq!(d("spartan_answers_total{rcode=all,source=kernel}"), 6.0);
    assert_eq!(d("spartan_cache_hits_total{layer=kernel}"), 3.0);
    assert_eq!(d("spartan_cache_misses_total{}"), 1.0);
    assert_eq!(d("spartan_queries_total{outcome=local,protocol=tcp}"), 2.0);
    assert_eq!(d("spartan_queries_total{outcome=local,protocol=udp}"), 1.0);
    assert_eq!(
        d("spartan_queries_total{outcome=forwarded,protocol=udp}"),
        1.0
    );
    assert_eq!(d("spartan_answers_total{rcode=NOERROR,source=local}"), 3.0);
    assert_eq!(
        d("spartan_answers_total{rcode=NOERROR,source=upstream}"),
        1.0
    );
    assert_eq!(
        d("spartan_upstream_successes_total{upstream=127.0.0.1:5353,zone=resolvers}"),
        1.0
    );
    assert_eq!(
        d("spartan_upstream_failures_total{reason=timeout,upstream=127.0.0.3:5353,zone=resolvers}"),
        1.0
    );
    assert_eq!(
        d("spartan_upstream_failures_total{reason=timeout,upstream=127.0.0.1:5353,zone=resolvers}"),
        0.0
    );
    assert_eq!(
        d(
            "spartan_upstream_request_duration_seconds_count{upstream=127.0.0.1:5353,zone=resolvers}"
        ),
        1.0
    );
    assert_eq!(d("spartan_forward_failures_total{zone=resolvers}"), 0.0);
    assert_eq!(
        after["spartan_zone_records{zone=zk.}"], 8.0,
        "SOA, NS, ns.zk, zk-1..5"
    );
    assert_eq!(
        after["spartan_zone_records{zone=spartan.}"], 4.0,
        "SOA, NS, ns, ready"
    );
    assert_eq!(after["spartan_in_flight{}"], 0.0);
    assert_eq!(after["spartan_masters{}"], 1.0);
    assert!(after["spartan_masters_last_success_timestamp_seconds{}"] > 1.0e9);
    assert!(
        after["spartan_upstream_score{upstream=127.0.0.3:5353,zone=resolvers}"]
            > after["spartan_upstream_score{upstream=127.0.0.1:5353,zone=resolvers}"]
    );
    assert!(after.keys().any(|k| k.starts_with("spartan_build_info{")));
}

#[test]
fn root_the_json_api_shows_what_the_zones_hold() {
    let node = spartan_node("spo");
    let pins = PinDir::new();
    let cfg = config(&pins, 3_600_000);
    let _s = Spartan::start(
        Some(&node),
        &["--config".into(), cfg.display().to_string()],
        server(),
    );
    let get = |path: &str| {
        let (status, body) = http_get(Some(&node), api(), path).unwrap();
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null),
        )
    };
    let (status, v) = get("/v1/version");
    assert_eq!((status, v["spartan"].as_str().is_some()), (200, true));
    let (_, records) = get("/v1/records");
    let records = records.as_array().unwrap();
    assert!(
        records
            .iter()
            .any(|r| r["name"] == "ready.spartan." && r["type"] == "A" && r["data"] == "127.0.0.1")
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["type"] == "A" && r["name"].as_str().unwrap().ends_with(".zk."))
            .count(),
        6
    );
    let (status, hosts) = get("/v1/hosts/zk-3.zk");
    assert_eq!(status, 200);
    assert_eq!(
        hosts,
        serde_json::json!([{"host": "zk-3.zk", "ip": "10.0.0.1"}])
    );
    assert_eq!(get("/v1/hosts/nope.zk").0, 404);
    let (_, ups) = get("/v1/upstreams");
    assert_eq!(
        ups.as_array().unwrap().len(),
        3,
        "two resolvers and one master: {ups}"
    );
    assert_eq!(
        http_get(Some(&node), api(), "/no/such/path").unwrap().0,
        404
    );
    // Not on the DNS address unless configured.
    assert!(
        http_get(
            Some(&node),
            "198.51.100.1:62080".parse().unwrap(),
            "/v1/version"
        )
        .is_err()
    );
}

/// Waits (bounded) until `/healthz` answers `want`.
fn wait_health(node: &Netns, s: &Spartan, want: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while http_get(Some(node), api(), "/healthz").unwrap().0 != want {
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz never became {want}:\n{}",
            s.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn root_healthz_follows_the_self_check() {
    let node = spartan_node("spo");
    let pins = PinDir::new();
    let cfg = config(&pins, 300);
    let s = Spartan::start(
        Some(&node),
        &["--config".into(), cfg.display().to_string()],
        server(),
    );
    let health = |path: &str| http_get(Some(&node), api(), path).unwrap().0;
    wait_health(&node, &s, 200);
    assert_eq!(health("/readyz"), 200);
    // Block the listen sockets (TCP: UDP is answered by XDP before netfilter).
    node.blackhole("198.51.100.1", 53);
    wait_health(&node, &s, 503);
    assert!(
        s.log_text().contains("self-check failed"),
        "{}",
        s.log_text()
    );
    node.flush_blackholes();
    wait_health(&node, &s, 200);
    let _ = client::udp_socket(Some(&node));
}

#[test]
fn root_a_stalled_udp_listener_turns_health_red_while_the_kernel_still_answers() {
    let node = spartan_node("spo");
    let pins = PinDir::new();
    let cfg = config(&pins, 300);
    let s = Spartan::start(
        Some(&node),
        &["--config".into(), cfg.display().to_string()],
        server(),
    );
    wait_health(&node, &s, 200);
    // Only UDP to the daemon is stopped; XDP sits before netfilter and keeps
    // answering `ready.spartan` A, which a check through the kernel would
    // take for health.
    tests::netns::sh(node.command("iptables").args([
        "-A",
        "INPUT",
        "-d",
        "198.51.100.1",
        "-p",
        "udp",
        "--dport",
        "53",
        "-j",
        "DROP",
    ]));
    let out = client::dig("dig", Some(&node), server(), &["+short", "ready.spartan"]);
    assert_eq!(
        client::short_lines(&out),
        vec!["127.0.0.1"],
        "the kernel answers"
    );
    wait_health(&node, &s, 503);
    assert!(
        s.log_text().contains("failing=\"UDP\"") || s.log_text().contains("failing=UDP"),
        "the log says which leg fails:\n{}",
        s.log_text()
    );
    node.flush_blackholes();
    wait_health(&node, &s, 200);
}

/// The metric names a PromQL expression uses (histogram series named by
/// their family).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("spartan_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn root_every_metric_of_the_grafana_dashboard_is_exported() {
    let node = spartan_node("spo");
    let pins = PinDir::new();
    let _nsd = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver-1");
    let cfg = config(&pins, 3_600_000);
    let _s = Spartan::start(
        Some(&node),
        &["--config".into(), cfg.display().to_string()],
        server(),
    );
    // One forwarded query, so that every per-upstream series exists.
    query_in(
        Some(&node),
        server(),
        "www.example.net.",
        RecordType::A,
        Duration::from_secs(3),
    )
    .unwrap();
    // Sample names as the text format writes them (a histogram's series
    // are `_bucket`, `_sum` and `_count`).
    let (status, text) = http_get(Some(&node), api(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let exported: std::collections::HashSet<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/grafana/spartan.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut checked = 0;
    let mut queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    queries.push(
        dashboard["templating"]["list"][1]["query"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    for expr in &queries {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "the dashboard uses {name}, which /metrics does not export ({expr})"
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "the dashboard's queries were read ({checked} names)"
    );
}
