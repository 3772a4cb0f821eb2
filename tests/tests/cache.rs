//! The answer cache end to end: the real daemon in a namespace, real NSD
//! upstreams, the upstream packets counted by iptables in the namespace.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tests::setup::{ask, server, spartan_node};

use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{Name, RecordType},
};
use tests::{
    client::{exchange_udp, query_message, udp_socket},
    daemon::Spartan,
    fault::{Fault, FaultServer},
    metrics,
    netns::Netns,
    nsd::Nsd,
};

const UPSTREAM_IP: &str = "127.0.0.1";
const UPSTREAM_PORT: u16 = 5353;

/// A node namespace with Spartan's address on `lo` and a counter of the
/// datagrams sent to the upstream.
fn node() -> Netns {
    let node = spartan_node("cch");
    node.count_udp_to(UPSTREAM_IP, UPSTREAM_PORT);
    node
}

fn upstream(node: &Netns) -> Nsd {
    Nsd::start(
        node,
        format!("{UPSTREAM_IP}:{UPSTREAM_PORT}").parse().unwrap(),
        "cache",
    )
}

fn spartan(node: &Netns, args: &[&str]) -> Spartan {
    let mut all = tests::args(&[
        "--listen",
        "198.51.100.1",
        "--no-xdp",
        "--upstream",
        &format!("{UPSTREAM_IP}:{UPSTREAM_PORT}"),
    ]);
    all.extend(tests::args(args));
    Spartan::start(Some(node), &all, server())
}

fn sent(node: &Netns) -> u64 {
    node.udp_sent_to(UPSTREAM_IP, UPSTREAM_PORT)
}

/// Sends `q` as it is over UDP; the parsed answer.
fn ask_message(node: &Netns, q: &Message) -> Message {
    let wire = q.to_vec().unwrap();
    let reply = exchange_udp(
        &udp_socket(Some(node)),
        server(),
        &wire,
        Duration::from_secs(4),
    )
    .expect("an answer");
    Message::from_vec(&reply).unwrap()
}

/// TTLs of the answer section (or of the SOA of a negative answer).
fn ttls(m: &Message) -> Vec<u32> {
    if m.answers().is_empty() {
        return m
            .name_servers()
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.ttl())
            .collect();
    }
    m.answers().iter().map(|r| r.ttl()).collect()
}

#[test]
fn root_ttls_are_capped_and_aged_and_expiry_goes_upstream() {
    let node = node();
    let _up = upstream(&node);
    let _s = spartan(&node, &[]);
    let before = sent(&node);
    let first = ask(&node, "long.cache.example.", RecordType::A);
    assert_eq!(ttls(&first), [60], "3600 s capped by max_ttl_s");
    std::thread::sleep(Duration::from_millis(1100));
    let second = ask(&node, "long.cache.example.", RecordType::A);
    assert_eq!(second.answers(), {
        let mut aged = first.answers().to_vec();
        aged[0].set_ttl(second.answers()[0].ttl());
        aged
    });
    assert_eq!(ttls(&second), [59], "aged by the second between them");
    assert_eq!(sent(&node) - before, 1, "the second came from the cache");

    // TTL 2: cached, then expired, then asked upstream again.
    let before = sent(&node);
    assert_eq!(
        ttls(&ask(&node, "short.cache.example.", RecordType::A)),
        [2]
    );
    ask(&node, "short.cache.example.", RecordType::A);
    assert_eq!(sent(&node) - before, 1);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        ttls(&ask(&node, "short.cache.example.", RecordType::A)),
        [2]
    );
    assert_eq!(
        sent(&node) - before,
        2,
        "expired: the next query went upstream"
    );
}

#[test]
fn root_mesos_names_get_the_short_cap_and_negative_answers_the_soa_minimum() {
    let node = node();
    let _up = upstream(&node);
    let _s = spartan(
        &node,
        &[
            "--masters",
            UPSTREAM_IP,
            "--mesos-port",
            &UPSTREAM_PORT.to_string(),
        ],
    );
    let m = ask(&node, "leader.mesos.", RecordType::A);
    assert_eq!(ttls(&m), [5], "Mesos-DNS's 60 s capped by mesos_max_ttl_s");

    let before = sent(&node);
    let nx = ask(&node, "nope.cache.example.", RecordType::A);
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert_eq!(nx.name_servers()[0].record_type(), RecordType::SOA);
    assert_eq!(
        ttls(&nx),
        [3],
        "min(SOA TTL, MINIMUM) = 3, under negative_ttl_s"
    );
    let nodata = ask(&node, "long.cache.example.", RecordType::AAAA);
    assert_eq!(nodata.response_code(), ResponseCode::NoError);
    assert!(nodata.answers().is_empty());
    for _ in 0..3 {
        assert_eq!(
            ask(&node, "nope.cache.example.", RecordType::A).response_code(),
            ResponseCode::NXDomain
        );
        ask(&node, "long.cache.example.", RecordType::AAAA);
    }
    assert_eq!(sent(&node) - before, 2, "negative answers cached");
    std::thread::sleep(Duration::from_millis(3100));
    ask(&node, "nope.cache.example.", RecordType::A);
    assert_eq!(sent(&node) - before, 3, "expired after the SOA minimum");
}

#[test]
fn root_zero_ttl_truncated_and_servfail_answers_are_not_cached() {
    let node = node();
    let _up = upstream(&node);
    let bad = FaultServer::start(&node, "127.0.0.9:5353".parse().unwrap(), Fault::ServFail);
    let _s = spartan(&node, &["--masters", "127.0.0.9", "--mesos-port", "5353"]);
    let before = sent(&node);
    for _ in 0..3 {
        assert_eq!(ttls(&ask(&node, "zero.cache.example.", RecordType::A)), [0]);
    }
    assert_eq!(sent(&node) - before, 3, "TTL 0: every query upstream");

    // 60 addresses: more than 512 bytes, TC over UDP every time.
    let before = sent(&node);
    for _ in 0..3 {
        let q = query_message(7, "big.example.net.", RecordType::A);
        assert!(ask_message(&node, &q).truncated());
    }
    assert_eq!(sent(&node) - before, 3, "truncated answers are not cached");

    for _ in 0..3 {
        let m = ask(&node, "leader.mesos.", RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }
    assert_eq!(
        bad.queries.load(std::sync::atomic::Ordering::Relaxed),
        3,
        "SERVFAIL is not cached"
    );
}

#[test]
fn root_a_hundred_identical_misses_make_one_upstream_exchange() {
    let node = node();
    let up = upstream(&node);
    let s = spartan(&node, &[]);
    let before = sent(&node);
    // The upstream stalls: every query is a miss while the first is out.
    up.pause();
    let node = Arc::new(node);
    let clients: Vec<_> = (0..100u16)
        .map(|i| {
            let node = node.clone();
            std::thread::spawn(move || {
                let q = query_message(i, "long.cache.example.", RecordType::A);
                let socket = udp_socket(Some(&node));
                exchange_udp(
                    &socket,
                    server(),
                    &q.to_vec().unwrap(),
                    Duration::from_secs(5),
                )
                .map(|r| Message::from_vec(&r).unwrap())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    up.resume();
    for (i, c) in clients.into_iter().enumerate() {
        let m = c.join().unwrap().expect("every client answered");
        assert_eq!(m.id(), i as u16);
        assert_eq!(m.answers().len(), 1);
    }
    assert_eq!(
        sent(&node) - before,
        1,
        "one exchange for 100 identical misses"
    );
    let waits = metrics::scrape_value(&node, "spartan_cache_flight_waits_total{}").unwrap_or(0.0);
    assert!(waits >= 99.0, "{waits}");
    drop(s);
}

#[test]
fn root_stale_answers_are_served_while_every_master_is_down_until_stale_max() {
    let node = node();
    let up = upstream(&node);
    let conf =
        std::env::temp_dir().join(format!("spartan-stale-{}.toml", tests::netns::unique("c")));
    std::fs::write(
        &conf,
        "upstream_timeout_ms = 2000\nquery_deadline_ms = 2500\n\
         [cache]\nmesos_max_ttl_s = 1\nstale_max_s = 3\nstale_answer_after_ms = 300\n",
    )
    .unwrap();
    let _s = spartan(
        &node,
        &[
            "--config",
            conf.to_str().unwrap(),
            "--masters",
            UPSTREAM_IP,
            "--mesos-port",
            &UPSTREAM_PORT.to_string(),
        ],
    );
    let fresh = ask(&node, "web.marathon.mesos.", RecordType::A);
    assert_eq!(ttls(&fresh), [1, 1]);
    let stored = Instant::now();
    up.pause();
    std::thread::sleep(Duration::from_millis(1200));
    let asked = Instant::now();
    let stale = ask(&node, "web.marathon.mesos.", RecordType::A);
    // The client response timer (300 ms), not the upstream timeout (2 s).
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(stale.response_code(), ResponseCode::NoError);
    assert_eq!(ttls(&stale), [30, 30], "RFC 8767: stale answers say 30 s");
    let mut got: Vec<String> = stale
        .answers()
        .iter()
        .map(|r| r.data().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ["10.0.1.10", "10.0.1.11"]);
    let served = metrics::scrape_value(&node, "spartan_cache_stale_served_total{}").unwrap_or(0.0);
    assert!(served >= 1.0);
    // Once the refresh failed, stale answers come at once.
    let asked = Instant::now();
    let again = ask(&node, "web.marathon.mesos.", RecordType::A);
    assert_eq!(ttls(&again), [30, 30]);
    assert!(
        asked.elapsed() < Duration::from_millis(250),
        "{:?}",
        asked.elapsed()
    );
    // Past expiry + stale_max_s: nothing left to serve.
    let until = stored + Duration::from_millis(1000 + 3000 + 300);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let gone = ask(&node, "web.marathon.mesos.", RecordType::A);
    assert_eq!(gone.response_code(), ResponseCode::ServFail);
    up.resume();
    let _ = std::fs::remove_file(conf);
}

#[test]
fn root_case_and_edns_are_the_clients_own_on_every_answer() {
    let node = node();
    let _up = upstream(&node);
    let _s = spartan(&node, &[]);
    let before = sent(&node);
    for (i, name) in [
        "LoNg.CaChE.example.",
        "long.cache.EXAMPLE.",
        "lONG.cache.example.",
    ]
    .iter()
    .enumerate()
    {
        for dnssec_ok in [false, true] {
            let mut q = Message::new();
            q.set_id(100 + i as u16)
                .set_recursion_desired(true)
                .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            let mut edns = Edns::new();
            edns.set_max_payload(1232).set_dnssec_ok(dnssec_ok);
            q.set_edns(edns);
            let m = ask_message(&node, &q);
            assert_eq!(m.id(), q.id());
            assert_eq!(m.queries()[0].name().to_ascii(), *name, "0x20 kept");
            assert_eq!(
                m.answers()[0].name().to_ascii(),
                *name,
                "owner from the question"
            );
            let opt = m.extensions().as_ref().expect("an OPT for an OPT");
            assert_eq!(opt.flags().dnssec_ok, dnssec_ok, "DO echoed");
        }
    }
    // One key per DO value: two exchanges for six queries.
    assert_eq!(sent(&node) - before, 2);
}

#[test]
fn root_with_the_cache_off_every_query_goes_upstream() {
    let node = node();
    let _up = upstream(&node);
    let _s = spartan(&node, &["--no-cache"]);
    let before = sent(&node);
    for _ in 0..5 {
        assert_eq!(
            ttls(&ask(&node, "long.cache.example.", RecordType::A)),
            [3600]
        );
    }
    assert_eq!(sent(&node) - before, 5);
}

fn cli(args: &[&str], as_uid: Option<u32>) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut c = std::process::Command::new(tests::daemon::spartan_bin());
    c.args(args).env_remove("SPARTAN_CONFIG");
    if let Some(uid) = as_uid {
        c.uid(uid);
    }
    c.output().expect("run the spartan CLI")
}

#[test]
fn root_operators_see_the_cache_and_root_alone_flushes_it() {
    let node = node();
    let _up = upstream(&node);
    let pins = tests::pins::PinDir::new();
    let pin_dir = pins.path().display().to_string();
    let args = tests::args(&[
        "--listen",
        "198.51.100.1",
        "--upstream",
        &format!("{UPSTREAM_IP}:{UPSTREAM_PORT}"),
        "--pin-dir",
        &pin_dir,
    ]);
    let _s = Spartan::start(Some(&node), &args, server());
    let maps = spartan::fastpath::KernelMaps::open_pinned(pins.path()).unwrap();
    let before = sent(&node);
    let kernel_before = maps.counters().unwrap();
    for _ in 0..3 {
        assert!(ttls(&ask(&node, "long.cache.example.", RecordType::A))[0] <= 60);
    }
    let kernel_after = maps.counters().unwrap();
    let from_cache = spartan_common::Counter::AnsweredFromCache;
    assert_eq!(
        kernel_after.get(from_cache) - kernel_before.get(from_cache),
        2,
        "after the first miss the kernel answers from its mirror"
    );
    assert_eq!(sent(&node) - before, 1);

    // The API lists it, with the seconds left and where it is held.
    let (status, body) =
        tests::client::http_get(Some(&node), metrics::api(), "/v1/cache").expect("GET /v1/cache");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let entry = v["listed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "long.cache.example." && e["type"] == "A")
        .unwrap_or_else(|| panic!("{body}"));
    assert!(entry["ttl_left"].as_i64().unwrap() <= 60 && entry["ttl_left"].as_i64().unwrap() > 50);
    assert_eq!(entry["in_kernel"], true);
    // `spartan stats` shows the kernel's copy.
    let stats = cli(
        &["stats", "--pin-dir", &pin_dir, "--http", "127.0.0.1:1"],
        None,
    );
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(
        text.lines().any(|l| l.contains("long.cache.example.")
            && l.contains("s left")
            && l.contains("192.0.2.1")),
        "{text}"
    );

    // Anyone else is refused; root flushes, and the next query goes upstream.
    let denied = cli(&["cache", "--pin-dir", &pin_dir, "flush"], Some(65534));
    assert!(!denied.status.success());
    assert_eq!(
        ttls(&ask(&node, "long.cache.example.", RecordType::A)).len(),
        1
    );
    assert_eq!(
        sent(&node) - before,
        1,
        "still cached after the refused flush"
    );
    let flushed = cli(
        &[
            "cache",
            "--pin-dir",
            &pin_dir,
            "flush",
            "LONG.cache.example",
        ],
        None,
    );
    assert!(flushed.status.success(), "{flushed:?}");
    assert_eq!(String::from_utf8_lossy(&flushed.stdout).trim(), "flushed 1");
    let kernel_before = maps.counters().unwrap();
    ask(&node, "long.cache.example.", RecordType::A);
    assert_eq!(sent(&node) - before, 2, "flushed in userspace");
    let kernel_after = maps.counters().unwrap();
    assert_eq!(
        kernel_after.get(from_cache),
        kernel_before.get(from_cache),
        "and in the kernel"
    );
    let all = cli(&["cache", "--pin-dir", &pin_dir, "flush"], None);
    assert_eq!(String::from_utf8_lossy(&all.stdout).trim(), "flushed 1");
}
