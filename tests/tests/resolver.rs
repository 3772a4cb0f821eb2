//! The userspace resolver end to end: the real daemon in a namespace, real
//! NSD upstreams on the namespace's loopback, dig/kdig and hickory clients.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};
use tests::setup::{ask, server, spartan_node};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use tests::{
    client::{self, dig, query_in, query_message, short_lines, tcp_connect, tcp_recv, tcp_send},
    daemon::Spartan,
    fault::{Fault, FaultServer},
    netns::Netns,
    nsd::Nsd,
};

fn spartan(node: &Netns, args: &[&str]) -> Spartan {
    let mut all = tests::args(&["--listen", "198.51.100.1", "--no-xdp"]);
    all.extend(tests::args(args));
    Spartan::start(Some(node), &all, server())
}

fn nsd(node: &Netns, addr: &str, label: &str) -> Nsd {
    Nsd::start(node, addr.parse().unwrap(), label)
}

fn txt(m: &Message) -> Vec<String> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::TXT(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn root_local_zones_answer_authoritatively() {
    let node = spartan_node("spr");
    let _s = spartan(&node, &["--masters", "10.0.0.1,10.0.0.2"]);

    let m = ask(&node, "ready.spartan.", RecordType::A);
    assert!(m.authoritative() && m.recursion_available());
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.answers().len(), 1);
    assert_eq!(
        m.answers()[0].data(),
        &RData::A("127.0.0.1".parse::<std::net::Ipv4Addr>().unwrap().into())
    );

    // NODATA: the name exists, not with that type.
    let m = ask(&node, "ready.spartan.", RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);

    let m = ask(&node, "nope.spartan.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
    assert!(m.authoritative());

    let m = ask(&node, "spartan.", RecordType::SOA);
    match m.answers()[0].data() {
        RData::SOA(soa) => {
            assert_eq!(soa.mname().to_ascii(), "ns.spartan.");
            assert_eq!(soa.rname().to_ascii(), "support.mesosphere.com.");
            assert_eq!(
                (
                    soa.serial(),
                    soa.refresh(),
                    soa.retry(),
                    soa.expire(),
                    soa.minimum()
                ),
                (0, 60, 180, 86400, 1)
            );
        }
        other => panic!("{other:?}"),
    }
    let out = dig("dig", Some(&node), server(), &["+short", "zk", "NS"]);
    assert_eq!(short_lines(&out), vec!["ns.zk."]);
    let out = dig("kdig", Some(&node), server(), &["+short", "zk-3.zk"]);
    assert_eq!(short_lines(&out), vec!["10.0.0.1"]);
    let out = dig("dig", Some(&node), server(), &["ns.spartan"]);
    assert!(out.contains("flags: qr aa rd ra"), "{out}");

    // EDNS: our OPT with UDP size 1232.
    let out = dig("dig", Some(&node), server(), &["+edns=0", "ready.spartan"]);
    assert!(out.contains("udp: 1232"), "{out}");
    // EDNS version 1: BADVERS.
    let out = dig(
        "dig",
        Some(&node),
        server(),
        &["+edns=1", "+noednsnegotiation", "ready.spartan"],
    );
    assert!(out.contains("status: BADVERS"), "{out}");

    // FORMERR for two questions, and for a header followed by garbage.
    let socket = client::udp_socket(Some(&node));
    let mut two = query_message(77, "ready.spartan.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("zk-1.zk.").unwrap(),
        RecordType::A,
    ));
    let reply = client::exchange_udp(
        &socket,
        server(),
        &two.to_vec().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!((m.id(), m.response_code()), (77, ResponseCode::FormErr));
    let mut garbage = query_message(78, "ready.spartan.", RecordType::A)
        .to_vec()
        .unwrap();
    garbage.truncate(14);
    let reply = client::exchange_udp(&socket, server(), &garbage, Duration::from_secs(3)).unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(
        (m.id(), m.response_code(), m.message_type()),
        (78, ResponseCode::FormErr, MessageType::Response)
    );
    // NOTIMP for another opcode.
    let mut status = query_message(79, "ready.spartan.", RecordType::A);
    status.set_op_code(OpCode::Status);
    let reply = client::exchange_udp(
        &socket,
        server(),
        &status.to_vec().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    assert_eq!(
        Message::from_vec(&reply).unwrap().response_code(),
        ResponseCode::NotImp
    );
}

#[test]
fn root_mesos_goes_to_masters_and_the_rest_to_resolvers() {
    let node = spartan_node("spr");
    let _r1 = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let _r2 = nsd(&node, "127.0.0.2:5353", "resolver-2");
    let _m1 = nsd(&node, "127.0.1.1:5354", "master-1");
    let _m2 = nsd(&node, "127.0.1.2:5354", "master-2");
    let _s = spartan(
        &node,
        &[
            "--upstream",
            "127.0.0.1:5353,127.0.0.2:5353",
            "--masters",
            "127.0.1.1,127.0.1.2",
            "--mesos-port",
            "5354",
        ],
    );
    let mut seen = HashSet::new();
    for _ in 0..20 {
        for label in txt(&ask(&node, "who.mesos.", RecordType::TXT)) {
            assert!(label.starts_with("master-"), "{label}");
            seen.insert(label);
        }
        for label in txt(&ask(&node, "who.example.net.", RecordType::TXT)) {
            assert!(label.starts_with("resolver-"), "{label}");
            seen.insert(label);
        }
    }
    assert!(seen.len() >= 2, "{seen:?}");
    // Mesos-DNS shaped names through dig and kdig.
    let out = dig(
        "dig",
        Some(&node),
        server(),
        &["+short", "_web._tcp.marathon.mesos", "SRV"],
    );
    assert_eq!(short_lines(&out), vec!["0 1 31000 web.marathon.mesos."]);
    let out = dig("kdig", Some(&node), server(), &["+short", "leader.mesos"]);
    assert_eq!(short_lines(&out), vec!["10.0.0.1"]);
    let mut web = short_lines(&dig(
        "dig",
        Some(&node),
        server(),
        &["+short", "web.marathon.mesos"],
    ));
    web.sort();
    assert_eq!(web, vec!["10.0.1.10", "10.0.1.11"]);
}

#[test]
fn root_forward_zones_by_longest_suffix() {
    let node = spartan_node("spr");
    let _r = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let _z = nsd(&node, "127.0.0.5:5353", "zone-1");
    let dir = std::env::temp_dir().join(tests::netns::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("spartan.toml");
    std::fs::write(
        &config,
        "upstream_resolvers = [\"127.0.0.1:5353\"]\n[forward_zones]\n\"example.net\" = [\"127.0.0.5:5353\"]\n\"net\" = [\"127.0.0.1:5353\"]\n",
    )
    .unwrap();
    let _s = spartan(&node, &["--config", config.to_str().unwrap()]);
    assert_eq!(
        txt(&ask(&node, "who.example.net.", RecordType::TXT)),
        vec!["zone-1"]
    );
    assert_eq!(
        txt(&ask(&node, "who.mesos.", RecordType::TXT)).len(),
        0,
        "no masters: SERVFAIL"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn root_a_blackholed_upstream_costs_the_client_nothing() {
    let node = spartan_node("spr");
    let _r1 = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let _r2 = nsd(&node, "127.0.0.2:5353", "resolver-2");
    let _r3 = nsd(&node, "127.0.0.3:5353", "resolver-3");
    node.blackhole("127.0.0.3", 5353);
    let _s = spartan(
        &node,
        &[
            "--upstream",
            "127.0.0.1:5353,127.0.0.2:5353,127.0.0.3:5353",
            "--upstream-timeout-ms",
            "2000",
        ],
    );
    let socket = client::udp_socket(Some(&node));
    let mut slowest = Duration::ZERO;
    for i in 0..300u16 {
        let wire = query_message(i, "www.example.net.", RecordType::A)
            .to_vec()
            .unwrap();
        let started = Instant::now();
        let reply = client::exchange_udp(&socket, server(), &wire, Duration::from_secs(5))
            .expect("answered");
        slowest = slowest.max(started.elapsed());
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!((m.id(), m.response_code()), (i, ResponseCode::NoError));
    }
    // Waiting for the dead upstream would cost its 2 s timeout.
    assert!(slowest < Duration::from_millis(1000), "slowest {slowest:?}");
}

#[test]
fn root_a_fast_servfail_does_not_beat_a_good_answer() {
    let node = spartan_node("spr");
    let bad = FaultServer::start(&node, "127.0.0.9:5353".parse().unwrap(), Fault::ServFail);
    let _good = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let _s = spartan(&node, &["--upstream", "127.0.0.9:5353,127.0.0.1:5353"]);
    for _ in 0..30 {
        let m = ask(&node, "www.example.net.", RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.answers().len(), 1);
    }
    assert!(
        bad.queries.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the SERVFAIL server was asked"
    );
}

#[test]
fn root_all_upstreams_down_gives_a_real_servfail_within_the_deadline() {
    let node = spartan_node("spr");
    let _r1 = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let _r2 = nsd(&node, "127.0.0.2:5353", "resolver-2");
    node.blackhole("127.0.0.1", 5353);
    node.blackhole("127.0.0.2", 5353);
    let _s = spartan(
        &node,
        &[
            "--upstream",
            "127.0.0.1:5353,127.0.0.2:5353",
            "--upstream-timeout-ms",
            "500",
            "--query-deadline-ms",
            "1000",
        ],
    );
    let started = Instant::now();
    let q = query_message(4242, "www.example.net.", RecordType::A);
    let socket = client::udp_socket(Some(&node));
    let reply = client::exchange_udp(
        &socket,
        server(),
        &q.to_vec().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let elapsed = started.elapsed();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.id(), 4242);
    assert_eq!(m.queries(), q.queries());
    assert!(m.recursion_available());
    assert!(elapsed < Duration::from_millis(2500), "{elapsed:?}");
    let out = dig("dig", Some(&node), server(), &["www.example.net"]);
    assert!(
        out.contains("status: SERVFAIL") && !out.contains("WARNING"),
        "{out}"
    );
}

#[test]
fn root_spoofed_and_stray_replies_are_ignored() {
    let node = spartan_node("spr");
    let _spoof = FaultServer::start(&node, "127.0.0.7:5353".parse().unwrap(), Fault::Spoof);
    let _s = spartan(&node, &["--upstream", "127.0.0.7:5353"]);
    for _ in 0..20 {
        let m = ask(&node, "www.example.net.", RecordType::A);
        let addrs: Vec<String> = m.answers().iter().map(|r| r.data().to_string()).collect();
        assert_eq!(addrs, vec!["192.0.2.80"]);
    }
}

#[test]
fn root_pipelined_tcp_queries_are_all_answered() {
    let node = spartan_node("spr");
    let _r1 = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let _s = spartan(&node, &["--upstream", "127.0.0.1:5353"]);
    let mut stream = tcp_connect(Some(&node), server()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sent = HashSet::new();
    for i in 0..30u16 {
        let name = if i % 2 == 0 {
            "www.example.net."
        } else {
            "ready.spartan."
        };
        tcp_send(
            &mut stream,
            &query_message(1000 + i, name, RecordType::A)
                .to_vec()
                .unwrap(),
        )
        .unwrap();
        sent.insert(1000 + i);
    }
    let mut got = HashSet::new();
    for _ in 0..30 {
        let m = Message::from_vec(&tcp_recv(&mut stream).unwrap()).unwrap();
        assert_eq!(m.response_code(), ResponseCode::NoError);
        got.insert(m.id());
    }
    assert_eq!(got, sent);
}

#[test]
fn root_truncation_passes_through_and_the_tcp_retry_works() {
    let node = spartan_node("spr");
    let _r1 = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let _s = spartan(&node, &["--upstream", "127.0.0.1:5353"]);
    let out = dig(
        "dig",
        Some(&node),
        server(),
        &["+ignore", "+noedns", "big.example.net"],
    );
    assert!(out.contains(" tc "), "TC passed on: {out}");
    for tool in ["dig", "kdig"] {
        let out = dig(
            tool,
            Some(&node),
            server(),
            &["+short", "+noedns", "big.example.net"],
        );
        assert_eq!(
            short_lines(&out).len(),
            60,
            "{tool} retried over TCP: {out}"
        );
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn root_the_in_flight_cap_holds_under_a_flood() {
    let node = spartan_node("spr");
    let _r1 = nsd(&node, "127.0.0.1:5353", "resolver-1");
    node.blackhole("127.0.0.1", 5353);
    let s = spartan(
        &node,
        &[
            "--upstream",
            "127.0.0.1:5353",
            "--max-in-flight",
            "32",
            "--upstream-timeout-ms",
            "500",
            "--query-deadline-ms",
            "500",
        ],
    );
    let socket = client::udp_socket(Some(&node));
    socket.set_nonblocking(true).unwrap();
    let rss_before = rss_kib(s.pid());
    for i in 0..5000u16 {
        let wire = query_message(i, &format!("n{i}.example.net."), RecordType::A)
            .to_vec()
            .unwrap();
        let _ = socket.send_to(&wire, server());
    }
    // Every forwarded query ends by the deadline; then the server is itself.
    std::thread::sleep(Duration::from_millis(1200));
    let m = ask(&node, "ready.spartan.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    let mut replies = 0;
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while socket.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    assert!(
        replies < 1000,
        "most of the flood was dropped, not queued: {replies} replies"
    );
    assert!(
        rss_kib(s.pid()) < rss_before + 32 * 1024,
        "memory stayed bounded"
    );
}

#[test]
fn root_generated_datagrams_do_not_hurt_the_daemon() {
    use rand::{Rng, SeedableRng, rngs::StdRng};
    let node = spartan_node("spr");
    let _r1 = nsd(&node, "127.0.0.1:5353", "resolver-1");
    let s = spartan(
        &node,
        &["--upstream", "127.0.0.1:5353", "--masters", "10.0.0.1"],
    );
    let socket = client::udp_socket(Some(&node));
    let mut rng = StdRng::seed_from_u64(0xdead_beef);
    let names = [
        "ready.spartan.",
        "zk-1.zk.",
        "nope.spartan.",
        "www.example.net.",
        "spartan.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::SOA,
        RecordType::TXT,
        RecordType::ANY,
    ];
    // Three rounds of 50,000 (100,000 and more in all): the first sets the
    // high-water mark of buffers, tasks and allocator arenas; the later
    // ones must not keep adding to it (a leak of even 100 bytes a datagram
    // would add 5 MB a round).
    let mut rss = Vec::new();
    for round in 0..3u32 {
        for n in 0..50_000u32 {
            let mut wire = query_message(
                rng.random(),
                names[rng.random_range(0..names.len())],
                types[rng.random_range(0..types.len())],
            )
            .to_vec()
            .unwrap();
            match n % 3 {
                0 => {
                    for _ in 0..rng.random_range(1..6) {
                        let i = rng.random_range(0..wire.len());
                        wire[i] = rng.random();
                    }
                }
                1 => wire.truncate(rng.random_range(0..wire.len())),
                _ => {
                    let len = rng.random_range(0..600);
                    wire = (0..len).map(|_| rng.random()).collect();
                }
            }
            let _ = socket.send_to(&wire, server());
            if n % 500 == 0 {
                // Pace the sender a little: the test is about robustness,
                // not about the socket buffer.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // Local names are answered at once, even while forwarded garbage
        // holds every in-flight slot. (Right after the flood the socket
        // buffer may still be full and drop a datagram, as any UDP server's
        // would: the client retries, as stub resolvers do.)
        let m = (0..3)
            .find_map(|_| {
                query_in(
                    Some(&node),
                    server(),
                    "ready.spartan.",
                    RecordType::A,
                    Duration::from_secs(2),
                )
                .ok()
            })
            .expect("ready.spartan answered within three tries");
        assert_eq!(m.response_code(), ResponseCode::NoError, "round {round}");
        // Let every forwarded query end (deadline 5 s).
        std::thread::sleep(Duration::from_millis(5500));
        rss.push(rss_kib(s.pid()));
    }
    let m = ask(&node, "www.example.net.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(
        rss[2] < rss[1] + 4 * 1024 && rss[2] < rss[0] + 12 * 1024,
        "RSS after each round (KiB): {rss:?}"
    );
}

/// The server closed `stream`: EOF or a reset, seen at once (a read that
/// merely times out means the connection is still open).
fn closed_by_server(stream: &mut std::net::TcpStream) -> bool {
    use std::io::{ErrorKind, Read};
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let closed = match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    };
    closed && started.elapsed() < Duration::from_secs(1)
}

#[test]
fn root_tcp_connections_are_capped_and_idle_ones_closed() {
    let node = spartan_node("spr");
    let dir = std::env::temp_dir().join(tests::netns::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("spartan.toml");
    std::fs::write(&config, "max_tcp_connections = 2\ntcp_idle_timeout_ms = 400\nupstream_resolvers = [\"127.0.0.1:5353\"]\n").unwrap();
    let _s = spartan(&node, &["--config", config.to_str().unwrap()]);
    let mut a = tcp_connect(Some(&node), server()).unwrap();
    let mut b = tcp_connect(Some(&node), server()).unwrap();
    for s in [&mut a, &mut b] {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        tcp_send(
            s,
            &query_message(5, "ready.spartan.", RecordType::A)
                .to_vec()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(Message::from_vec(&tcp_recv(s).unwrap()).unwrap().id(), 5);
    }
    // A third connection while two are open is closed at once.
    let mut c = tcp_connect(Some(&node), server()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = tcp_send(
        &mut c,
        &query_message(6, "ready.spartan.", RecordType::A)
            .to_vec()
            .unwrap(),
    );
    assert!(closed_by_server(&mut c), "third connection refused");
    // Idle connections are closed after the idle timeout.
    std::thread::sleep(Duration::from_millis(900));
    assert!(closed_by_server(&mut a), "idle connection closed");
    // And their slots are free again.
    let mut d = tcp_connect(Some(&node), server()).unwrap();
    d.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tcp_send(
        &mut d,
        &query_message(7, "ready.spartan.", RecordType::A)
            .to_vec()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        Message::from_vec(&tcp_recv(&mut d).unwrap()).unwrap().id(),
        7
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn root_an_upstream_reply_too_large_for_the_client_becomes_tc_at_once() {
    let node = spartan_node("spr");
    let _f = FaultServer::start(&node, "127.0.0.1:5353".parse().unwrap(), Fault::Oversized);
    let _s = spartan(&node, &["--upstream", "127.0.0.1:5353"]);
    // No EDNS: the client takes 512 bytes; the upstream sends ~3.2 KB.
    let started = Instant::now();
    let m = ask(&node, "many.example.net.", RecordType::A);
    assert!(m.truncated(), "TC set: {m:?}");
    assert!(m.answers().is_empty());
    assert_eq!(m.queries()[0].name().to_ascii(), "many.example.net.");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "at once, not after the 2 s upstream timeout: {:?}",
        started.elapsed()
    );
    // With EDNS 4096 the whole reply fits and passes.
    let out = dig(
        "dig",
        Some(&node),
        server(),
        &["+bufsize=4096", "+ignore", "many.example.net"],
    );
    assert!(out.contains("ANSWER: 200"), "{out}");
}

#[test]
fn root_unknown_opcodes_get_a_bare_notimp_and_the_ns_names_resolve() {
    let node = spartan_node("spr");
    let _s = spartan(&node, &["--masters", "10.0.0.1"]);
    // Opcode STATUS (2), with RD, CD and AD set in the query.
    let mut q = query_message(99, "ready.spartan.", RecordType::A);
    q.set_op_code(OpCode::Status)
        .set_checking_disabled(true)
        .set_authentic_data(true);
    let socket = client::udp_socket(Some(&node));
    let reply = client::exchange_udp(
        &socket,
        server(),
        &q.to_vec().unwrap(),
        Duration::from_secs(3),
    )
    .unwrap();
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!((m.id(), m.response_code()), (99, ResponseCode::NotImp));
    assert_eq!(m.message_type(), MessageType::Response);
    assert!(
        !m.recursion_available()
            && !m.recursion_desired()
            && !m.checking_disabled()
            && !m.authentic_data(),
        "no RA, RD, CD or AD: {m:?}"
    );
    for ns in ["ns.spartan.", "ns.zk."] {
        let m = ask(&node, ns, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{ns}");
        assert_eq!(
            m.answers()[0].data(),
            &RData::A("198.51.100.1".parse::<std::net::Ipv4Addr>().unwrap().into()),
            "{ns}"
        );
    }
}
