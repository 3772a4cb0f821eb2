//! No client can starve the others, and the daemon lives within a fixed
//! descriptor budget: the real daemon in a namespace, real NSD upstreams,
//! "silently dropping" made with an iptables DROP inside the namespace.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};
use tests::setup::{TempConfig, server, spartan_node};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};
use tests::{
    client::{self, query_message, tcp_connect, tcp_recv, tcp_send},
    daemon::Spartan,
    load::Load,
    nsd::Nsd,
};

fn args(extra: &[&str]) -> Vec<String> {
    let mut all = tests::args(&["--listen", "198.51.100.1", "--no-xdp"]);
    all.extend(tests::args(extra));
    all
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn root_a_flood_of_misses_from_one_client_costs_another_nothing() {
    let node = spartan_node("iso");
    let _resolver = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver");
    let _dead = Nsd::start(&node, "127.0.0.9:5353".parse().unwrap(), "dead");
    node.blackhole("127.0.0.9", 5353);
    let config = TempConfig::new(
        "upstream_resolvers = [\"127.0.0.1:5353\"]\n[forward_zones]\n\"drop.test\" = [\"127.0.0.9:5353\"]\n",
    );
    let s = Spartan::start(
        Some(&node),
        &args(&["--config", config.to_str().unwrap()]),
        server(),
    );
    // Client A: 3,000 random names a second into the dead zone, 3 s.
    std::thread::scope(|scope| {
        let flood = scope.spawn(|| {
            Load {
                source: ip("127.0.0.2"),
                server: server(),
                count: 9_000,
                rate: 3_000,
                rtype: RecordType::A,
                linger: Duration::from_millis(100),
            }
            .run(&node, |i| {
                format!("r{i}-{}.drop.test.", rand::random::<u32>())
            })
        });
        // Once A's misses fill what they may, client B asks ordinary names.
        std::thread::sleep(Duration::from_millis(1000));
        let b = Load {
            source: ip("127.0.0.3"),
            server: server(),
            count: 100,
            rate: 100,
            rtype: RecordType::A,
            linger: Duration::from_millis(1500),
        }
        .run(&node, |_| "www.example.net.".to_string());
        let a = flood.join().unwrap();
        let dropped =
            tests::metrics::scrape_value(&node, "spartan_dropped_total{reason=client_share}");
        assert_eq!(
            (b.answered, b.noerror),
            (100, 100),
            "B's ordinary queries all answered: {b:?} (A: {a:?}; client-share drops {dropped:?})\n{}",
            s.log_text()
        );
        assert!(
            dropped.unwrap_or(0.0) > 1000.0,
            "A's flood was cut at its share: {dropped:?}"
        );
    });
}

#[test]
fn root_a_never_reading_tcp_client_costs_only_its_connection() {
    let node = spartan_node("iso");
    let _resolver = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver");
    let _s = Spartan::start(
        Some(&node),
        &args(&["--upstream", "127.0.0.1:5353"]),
        server(),
    );
    // Tens of thousands of pipelined forwarded queries, never read.
    let mut evil = tcp_connect(Some(&node), server()).unwrap();
    evil.set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut pipelined = 0;
    let started = Instant::now();
    for i in 0..40_000u32 {
        let wire = query_message(i as u16, "www.example.net.", RecordType::A)
            .to_vec()
            .unwrap();
        let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&wire);
        // The server stops reading once the connection's caps are reached:
        // our writes then block and time out, which is the point.
        if evil.write_all(&framed).is_err() || started.elapsed() > Duration::from_secs(10) {
            break;
        }
        pipelined += 1;
    }
    assert!(pipelined > 1_000, "only {pipelined} queries written");
    // Meanwhile another client: forwarded over UDP, local over TCP.
    for i in 0..20 {
        let t = Instant::now();
        let m = client::query_in(
            Some(&node),
            server(),
            "www.example.net.",
            RecordType::A,
            Duration::from_secs(1),
        )
        .unwrap_or_else(|e| panic!("UDP forwarded query {i} unanswered within 1 s: {e}"));
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(t.elapsed() < Duration::from_secs(1));
        let t = Instant::now();
        let mut tcp = tcp_connect(Some(&node), server()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let q = query_message(7, "ready.spartan.", RecordType::A)
            .to_vec()
            .unwrap();
        tcp_send(&mut tcp, &q).unwrap();
        let reply = tcp_recv(&mut tcp)
            .unwrap_or_else(|e| panic!("TCP local query {i} unanswered within 1 s: {e}"));
        assert_eq!(
            Message::from_vec(&reply).unwrap().response_code(),
            ResponseCode::NoError
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }
    drop(evil);
}

#[test]
fn root_a_dropping_upstream_under_1024_descriptors_loses_nothing() {
    let node = spartan_node("iso");
    let _good = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "good");
    let _dead = Nsd::start(&node, "127.0.0.2:5353".parse().unwrap(), "dead");
    node.blackhole("127.0.0.2", 5353);
    let _s = Spartan::start_with_fd_limit(
        &node,
        &args(&["--upstream", "127.0.0.1:5353,127.0.0.2:5353"]),
        server(),
        1024,
    );
    let t = Load {
        source: ip("127.0.0.3"),
        server: server(),
        count: 10_000,
        rate: 1_000,
        rtype: RecordType::A,
        linger: Duration::from_secs(3),
    }
    .run(&node, |_| "www.example.net.".to_string());
    assert_eq!(
        (t.servfail, t.lost()),
        (0, 0),
        "1,000 forwarded queries a second for 10 s with one dead upstream: {t:?}"
    );
}

#[test]
fn root_idle_http_connections_do_not_stop_dns() {
    let node = spartan_node("iso");
    let _resolver = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver");
    let _s = Spartan::start_with_fd_limit(
        &node,
        &args(&["--upstream", "127.0.0.1:5353"]),
        server(),
        1024,
    );
    // This test's own process needs room for 1,100 sockets.
    tests::raise_own_fd_limit(4096);
    let api: SocketAddr = "127.0.0.1:62080".parse().unwrap();
    let idle: Vec<_> = (0..1_100)
        .filter_map(|_| tcp_connect(Some(&node), api).ok())
        .collect();
    assert!(
        idle.len() >= 1_000,
        "only {} connections opened",
        idle.len()
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let m = client::query_in(
            Some(&node),
            server(),
            "www.example.net.",
            RecordType::A,
            Duration::from_secs(2),
        )
        .expect("forwarded query answered");
        assert_eq!(m.response_code(), ResponseCode::NoError);
        let out = client::dig(
            "dig",
            Some(&node),
            server(),
            &["+tcp", "+short", "ready.spartan"],
        );
        assert_eq!(client::short_lines(&out), vec!["127.0.0.1"]);
    }
    drop(idle);
}
