//! The XDP program on crafted frames through BPF_PROG_TEST_RUN: the real
//! object embedded in the binary, loaded into the running kernel.

use std::net::Ipv4Addr;

use std::sync::Arc;

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::A, rdata::CNAME, rdata::SOA},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use spartan::{
    cache::{AnswerCache, Asked, CachedAnswer},
    config::CacheConfig,
    fastpath::{FastPath, KernelMaps, monotonic_ns, test_run},
    message::Transport,
    zone::LocalZones,
};
use spartan_common::{
    AnswerValue, Counter, INTERFACE_SLOTS, InterfaceSlot, KERNEL_MIRROR_MAX, map_names,
};
use tests::{
    frame::{
        CLIENT_IP, SERVER_IP, SERVER_MAC, Wrapper, check_answer_frame, query, query_frame,
        with_edns,
    },
    pins::PinDir,
    require_root,
};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const MASTERS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];

/// BPF_PROG_TEST_RUN runs the program as if the frame came in on `lo` of
/// the caller's namespace.
const TEST_RUN_IFINDEX: u32 = 1;

struct Harness {
    fast_path: FastPath,
    maps: KernelMaps,
    /// The daemon's answer cache, writing its entries to this program's map.
    cache: AnswerCache,
    // Dropped last: removes the pins after the program and maps are closed.
    pins: PinDir,
}

fn cache_config() -> CacheConfig {
    CacheConfig {
        enabled: true,
        max_entries: KERNEL_MIRROR_MAX,
        max_bytes: 32 << 20,
        max_ttl_s: 60,
        mesos_max_ttl_s: 5,
        negative_ttl_s: 5,
        stale_max_s: 100,
        stale_answer_after_ms: 500,
    }
}

impl Harness {
    fn new() -> Self {
        Self::on_port(53)
    }

    fn on_port(port: u16) -> Self {
        require_root();
        let pins = PinDir::new();
        let fast_path = FastPath::load(pins.path(), port).expect("load the embedded XDP object");
        let mut maps = fast_path.maps().unwrap();
        let masters: Vec<Ipv4Addr> = MASTERS.iter().map(|m| ip(m)).collect();
        let zones = LocalZones::new(SERVER_IP, &masters);
        maps.write_local_answers(&zones.kernel_answers()).unwrap();
        maps.write_listen_addrs(&[SERVER_IP, ip("198.51.100.2"), ip("198.51.100.3")])
            .unwrap();
        // The frames are sent to SERVER_MAC.
        maps.write_interface(TEST_RUN_IFINDEX, SERVER_MAC, false)
            .unwrap();
        maps.beat().unwrap();
        let cache = AnswerCache::new(&cache_config(), Arc::default());
        cache.attach_kernel(maps.answer_table().unwrap());
        Self {
            fast_path,
            maps,
            cache,
            pins,
        }
    }

    /// Stores `reply` as the upstream's answer to `q` (every DO/CD variant
    /// of its key), as the daemon does after a miss.
    fn cache_reply(&self, q: &Message, reply: &Message) {
        for (dnssec_ok, cd) in [
            (None, false),
            (Some(true), false),
            (None, true),
            (Some(true), true),
        ] {
            let mut q = q.clone();
            q.set_checking_disabled(cd);
            if let Some(d) = dnssec_ok {
                q = with_edns(q, 0, d, false);
            }
            let asked = Asked::new(&q.to_vec().unwrap(), &q, Transport::Udp).unwrap();
            self.cache
                .insert(&asked.key, &reply.to_vec().unwrap(), false, monotonic_ns())
                .expect("cacheable");
        }
    }

    fn run(&mut self, frame: &[u8]) -> test_run::TestRunOutput {
        self.fast_path
            .test_run(test_run::Program::Spartan, frame, 1)
            .expect("BPF_PROG_TEST_RUN")
    }

    /// Runs a frame that must be answered; returns the parsed answer.
    fn answered(&mut self, frame: &[u8]) -> Message {
        let out = self.run(frame);
        assert_eq!(out.action, XDP_TX, "expected XDP_TX");
        let payload = check_answer_frame(frame, &out.frame);
        Message::from_vec(&payload).expect("answer parses")
    }

    /// Runs a frame that must be passed unchanged, counted under `reason`.
    fn passed(&mut self, frame: &[u8], reason: Counter) {
        let before = self.maps.counters().unwrap();
        let out = self.run(frame);
        assert_eq!(out.action, XDP_PASS, "expected XDP_PASS ({reason:?})");
        assert_eq!(out.frame, frame, "a passed frame is unchanged");
        let after = self.maps.counters().unwrap();
        let moved: Vec<(Counter, u64)> = Counter::ALL
            .iter()
            .map(|c| (*c, after.get(*c) - before.get(*c)))
            .filter(|(_, d)| *d > 0)
            .collect();
        assert_eq!(
            after.get(reason) - before.get(reason),
            1,
            "counted as {reason:?}; counted: {moved:?}"
        );
        assert_eq!(after.get(Counter::Answered), before.get(Counter::Answered));
    }
}

fn answer_addrs(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .map(|r| match r.data() {
            RData::A(A(a)) => *a,
            other => panic!("unexpected record {other:?}"),
        })
        .collect()
}

/// Checks the fixed header of a kernel answer to `q`.
fn check_header(q: &Message, a: &Message) {
    assert_eq!(a.id(), q.id());
    assert_eq!(a.message_type(), MessageType::Response);
    assert!(a.authoritative());
    assert!(a.recursion_available());
    assert_eq!(a.recursion_desired(), q.recursion_desired());
    assert!(!a.truncated());
    assert_eq!(a.response_code(), ResponseCode::NoError);
    assert_eq!(a.queries(), q.queries());
    assert!(a.name_servers().is_empty());
}

#[test]
fn root_hit_without_edns() {
    let mut h = Harness::new();
    let q = query(0x1234, "ready.spartan.", RecordType::A);
    let f = query_frame(&q);
    let before = h.maps.counters().unwrap();
    let a = h.answered(&f);
    check_header(&q, &a);
    assert_eq!(answer_addrs(&a), vec![ip("127.0.0.1")]);
    assert_eq!(a.answers()[0].ttl(), 5);
    assert_eq!(a.answers()[0].name(), q.queries()[0].name());
    assert!(a.extensions().is_none(), "no OPT without one in the query");
    // The answer's owner name is a pointer to the question.
    let out = h.run(&f);
    let dns = &out.frame[42..];
    let qlen = 12 + 15 + 4;
    assert_eq!(dns[qlen..qlen + 2], [0xc0, 0x0c]);
    let after = h.maps.counters().unwrap();
    assert_eq!(
        after.get(Counter::Answered) - before.get(Counter::Answered),
        2
    );
    assert_eq!(
        after.get(Counter::QueriesForUs) - before.get(Counter::QueriesForUs),
        2
    );
}

#[test]
fn root_hit_with_edns_cookie_and_do_bit() {
    let mut h = Harness::new();
    for (dnssec_ok, cookie) in [(false, false), (false, true), (true, false), (true, true)] {
        let q = with_edns(
            query(7, "ready.spartan.", RecordType::A),
            0,
            dnssec_ok,
            cookie,
        );
        let a = h.answered(&query_frame(&q));
        check_header(&q, &a);
        assert_eq!(answer_addrs(&a), vec![ip("127.0.0.1")]);
        let edns = a.extensions().as_ref().expect("OPT in the answer");
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(edns.version(), 0);
        assert_eq!(edns.flags().dnssec_ok, dnssec_ok, "DO copied");
        assert!(
            edns.options().as_ref().is_empty(),
            "no options in the answer"
        );
        assert_eq!(a.additionals().len(), 0);
    }
}

#[test]
fn root_mixed_case_question_is_kept() {
    let mut h = Harness::new();
    let q = query(99, "ReAdY.SpArTaN.", RecordType::A);
    let f = query_frame(&q);
    let a = h.answered(&f);
    assert_eq!(answer_addrs(&a), vec![ip("127.0.0.1")]);
    // The client's own bytes, case and all.
    let out = h.run(&f);
    assert_eq!(out.frame[54..54 + 15], f[54..54 + 15]);
    assert_eq!(&out.frame[55..60], b"ReAdY");
}

#[test]
fn root_zk_names_follow_the_master_list() {
    let mut h = Harness::new();
    let want = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2"];
    for (i, addr) in want.iter().enumerate() {
        let q = query(i as u16, &format!("zk-{}.zk.", i + 1), RecordType::A);
        let a = h.answered(&query_frame(&q));
        check_header(&q, &a);
        assert_eq!(answer_addrs(&a), vec![ip(addr)]);
    }
}

#[test]
fn root_queries_the_kernel_leaves_to_userspace() {
    let mut h = Harness::new();
    h.passed(
        &query_frame(&query(1, "nope.spartan.", RecordType::A)),
        Counter::PassNotInMap,
    );
    h.passed(
        &query_frame(&query(1, "example.com.", RecordType::A)),
        Counter::PassNotInMap,
    );
    h.passed(
        &query_frame(&query(1, "ready.spartan.", RecordType::AAAA)),
        Counter::PassNotInMap,
    );
    let long = format!("{}.spartan.", "a".repeat(50));
    h.passed(
        &query_frame(&query(1, &long, RecordType::A)),
        Counter::PassNotInMap,
    );
    let too_long = format!("{0}.{0}.spartan.", "a".repeat(50));
    h.passed(
        &query_frame(&query(1, &too_long, RecordType::A)),
        Counter::PassNotInMap,
    );

    // QDCOUNT=2.
    let mut two = query(1, "ready.spartan.", RecordType::A);
    two.add_query(hickory_proto::op::Query::query(
        "zk-1.zk.".parse().unwrap(),
        RecordType::A,
    ));
    h.passed(&query_frame(&two), Counter::PassMalformed);

    // A compression pointer in the question.
    let mut raw = query(1, "ready.spartan.", RecordType::A).to_vec().unwrap();
    raw.truncate(12);
    raw.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    h.passed(&Wrapper::default().frame(&raw), Counter::PassMalformed);

    // EDNS version 1.
    let v1 = with_edns(query(1, "ready.spartan.", RecordType::A), 1, false, false);
    h.passed(&query_frame(&v1), Counter::PassUnsupportedEdns);

    let payload = query(1, "ready.spartan.", RecordType::A).to_vec().unwrap();
    // IPv4 options.
    let opts = Wrapper {
        ip_options: vec![1, 1, 1, 0],
        ..Wrapper::default()
    };
    h.passed(&opts.frame(&payload), Counter::PassIpOptionsOrFragment);
    // A fragment: MF set, and a non-zero offset.
    for frag in [0x2000u16, 0x0010] {
        let w = Wrapper {
            frag,
            ..Wrapper::default()
        };
        h.passed(&w.frame(&payload), Counter::PassIpOptionsOrFragment);
    }
    // Wrong destination address, wrong port, not UDP, not IPv4.
    let w = Wrapper {
        dst: ip("198.51.100.9"),
        ..Wrapper::default()
    };
    h.passed(&w.frame(&payload), Counter::PassNotOurAddress);
    let w = Wrapper {
        dport: 5353,
        ..Wrapper::default()
    };
    h.passed(&w.frame(&payload), Counter::PassNotUdpDns);
    let w = Wrapper {
        protocol: 6,
        ..Wrapper::default()
    };
    h.passed(&w.frame(&payload), Counter::PassNotUdpDns);
    let w = Wrapper {
        ethertype: 0x86dd,
        ..Wrapper::default()
    };
    h.passed(&w.frame(&payload), Counter::PassNotIpv4);

    // A response (QR=1), as our own answer looks when it comes back on lo.
    let mut resp = query(1, "ready.spartan.", RecordType::A);
    resp.set_message_type(MessageType::Response);
    h.passed(&query_frame(&resp), Counter::PassResponse);
    // Our own answer, fed back to the program as it comes back on lo.
    let answer = h
        .run(&query_frame(&query(5, "ready.spartan.", RecordType::A)))
        .frame;
    let out = h.run(&answer);
    assert_eq!((out.action, &out.frame), (XDP_PASS, &answer));

    // EDNS options that overrun the OPT record, or too many of them.
    let mut bad_opt = with_edns(query(1, "ready.spartan.", RecordType::A), 0, false, true)
        .to_vec()
        .unwrap();
    let n = bad_opt.len();
    bad_opt[n - 9] = 0x10; // cookie length 8 -> 0x1008
    h.passed(&Wrapper::default().frame(&bad_opt), Counter::PassMalformed);

    // Trailing bytes after the question.
    let mut trailing = payload.clone();
    trailing.extend_from_slice(&[0, 0]);
    h.passed(&Wrapper::default().frame(&trailing), Counter::PassMalformed);
}

#[test]
fn root_stale_heartbeat_sends_ready_to_userspace_but_not_zk() {
    let mut h = Harness::new();
    let ready = query_frame(&query(1, "ready.spartan.", RecordType::A));
    let zk = query_frame(&query(1, "zk-1.zk.", RecordType::A));
    h.answered(&ready);
    let now = spartan::fastpath::monotonic_ns();
    h.maps.set_heartbeat(now - 4_000_000_000).unwrap();
    h.passed(&ready, Counter::PassStaleHeartbeat);
    h.answered(&zk);
    h.maps.set_heartbeat(0).unwrap();
    h.passed(&ready, Counter::PassStaleHeartbeat);
    h.maps.set_heartbeat(now - 1_000_000_000).unwrap();
    h.answered(&ready);
}

#[test]
fn root_every_truncation_of_a_query_passes_unchanged() {
    let mut h = Harness::new();
    for q in [
        query(3, "ready.spartan.", RecordType::A),
        with_edns(query(3, "zk-2.zk.", RecordType::A), 0, true, true),
    ] {
        let full = query_frame(&q);
        for len in 0..full.len() {
            let cut = &full[..len];
            match h.fast_path.test_run(test_run::Program::Spartan, cut, 1) {
                Ok(out) => {
                    assert_eq!(out.action, XDP_PASS, "cut at {len} must pass");
                    assert_eq!(out.frame, cut, "cut at {len} unchanged");
                }
                // The kernel refuses to run XDP on less than an Ethernet header.
                Err(e)
                    if len < 14
                        && e.chain()
                            .filter_map(|c| c.downcast_ref::<std::io::Error>())
                            .any(|io| io.raw_os_error() == Some(libc::EINVAL)) => {}
                Err(e) => panic!("test run at {len}: {e:#}"),
            }
        }
        // Lying lengths: the IP and UDP length fields cut short or too long.
        let mut short_ip = full.clone();
        short_ip[16..18].copy_from_slice(&((full.len() - 14 - 2) as u16).to_be_bytes());
        h.passed(&short_ip, Counter::PassMalformed);
        let mut long_udp = full.clone();
        long_udp[38..40].copy_from_slice(&((full.len() - 34 + 2) as u16).to_be_bytes());
        h.passed(&long_udp, Counter::PassMalformed);
        h.answered(&full);
    }
}

#[test]
fn root_ethernet_padding_is_trimmed_from_the_answer() {
    let mut h = Harness::new();
    let q = query(3, "zk-5.zk.", RecordType::A);
    let mut f = query_frame(&q);
    f.extend_from_slice(&[0u8; 20]);
    let a = h.answered(&f);
    assert_eq!(answer_addrs(&a), vec![ip("10.0.0.2")]);
}

/// Is `f` a well-formed A/IN query for one of the answered names, by the
/// rules the kernel applies? An oracle independent of the program.
fn answerable(f: &[u8], names: &[String]) -> Option<Message> {
    if f.len() < 42 || f[12..14] != [8, 0] || f[14] != 0x45 || f[23] != 17 {
        return None;
    }
    // Sent to the interface's own address, from a source that can be
    // answered (not 0.0.0.0, broadcast, multicast or loopback off lo, nor
    // port 0).
    let src = Ipv4Addr::new(f[26], f[27], f[28], f[29]);
    if f[..6] != SERVER_MAC
        || src.is_unspecified()
        || src.is_broadcast()
        || src.is_multicast()
        || src.is_loopback()
        || f[34..36] == [0, 0]
    {
        return None;
    }
    if (u16::from_be_bytes([f[20], f[21]]) & 0x3fff) != 0 {
        return None;
    }
    // A header whose checksum is wrong (the stack would drop the query).
    let header_sum: u32 = f[14..34]
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    if (header_sum & 0xffff) + (header_sum >> 16) != 0xffff {
        return None;
    }
    let total = u16::from_be_bytes([f[16], f[17]]) as usize;
    if total < 40
        || 14 + total > f.len()
        || u16::from_be_bytes([f[38], f[39]]) as usize != total - 20
    {
        return None;
    }
    if f[36..38] != [0, 53] || f[30..33] != [198, 51, 100] || !(1..=3).contains(&f[33]) {
        return None;
    }
    let payload = &f[42..14 + total];
    let m = Message::from_vec(payload).ok()?;
    // hickory accepts some things the kernel does not; apply its rules.
    if m.message_type() != MessageType::Query
        || u8::from(m.op_code()) != 0
        || m.truncated()
        || m.queries().len() != 1
        || !m.answers().is_empty()
        || !m.name_servers().is_empty()
        || !m.additionals().is_empty()
    {
        return None;
    }
    // No compression pointer (or other label type) in the question name.
    let mut at = 12;
    loop {
        let len = *payload.get(at)? as usize;
        if len & 0xc0 != 0 {
            return None;
        }
        if len == 0 {
            break;
        }
        at += 1 + len;
    }
    if m.extensions().as_ref().is_some_and(|e| e.version() != 0) {
        return None;
    }
    let q = &m.queries()[0];
    if q.query_type() != RecordType::A || q.query_class() != hickory_proto::rr::DNSClass::IN {
        return None;
    }
    // Every answer here fits 512 bytes; nothing larger is in the map.
    let name = q.name().to_lowercase().to_ascii();
    names.contains(&name).then_some(m)
}

#[test]
fn root_generated_frames_are_answered_correctly_or_passed_unchanged() {
    let mut h = Harness::new();
    let names = tests::args(&[
        "ready.spartan.",
        "zk-1.zk.",
        "zk-2.zk.",
        "zk-3.zk.",
        "zk-4.zk.",
        "zk-5.zk.",
        "ns.spartan.",
        "web.example.",
        "www.shop.example.",
        "missing.example.",
    ]);
    // Cache entries besides the local names (A answers of every shape).
    for (q, reply) in cached_shapes() {
        if q.queries()[0].query_type() == RecordType::A {
            h.cache_reply(&q, &reply);
        }
    }
    let candidates = [
        "web.example.",
        "WWW.Shop.example.",
        "missing.example.",
        "ready.spartan.",
        "READY.spartan.",
        "zk-1.zk.",
        "Zk-5.ZK.",
        "ns.spartan.",
        "zk-6.zk.",
        "nope.spartan.",
        "example.com.",
        "a.b.c.d.e.f.g.h.",
        "zk.",
        "spartan.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::A,
        RecordType::A,
    ];
    let mut rng = StdRng::seed_from_u64(0x05a2_7a11);
    let total = 100_000;
    let (mut tx, mut pass) = (0u32, 0u32);
    for n in 0..total {
        let name = candidates[rng.random_range(0..candidates.len())];
        let rtype = types[rng.random_range(0..types.len())];
        let mut q = query(rng.random(), name, rtype);
        if rng.random_bool(0.4) {
            q = with_edns(q, rng.random_range(0..2), rng.random(), rng.random());
        }
        let mut w = Wrapper::default();
        if rng.random_bool(0.1) {
            w.dst = Ipv4Addr::new(198, 51, 100, rng.random_range(0..6));
        }
        let mut f = w.frame(&q.to_vec().unwrap());
        match n % 4 {
            0 => {} // intact
            1 => {
                // Flip 1-4 random bytes.
                for _ in 0..rng.random_range(1..=4) {
                    let i = rng.random_range(0..f.len());
                    f[i] ^= 1 << rng.random_range(0..8);
                }
            }
            2 => {
                // Cut or extend.
                if rng.random_bool(0.5) {
                    f.truncate(rng.random_range(14..f.len()));
                } else {
                    for _ in 0..rng.random_range(1..40) {
                        f.push(rng.random());
                    }
                }
            }
            _ => {
                // Random bytes over the DNS part, headers kept.
                for b in f.iter_mut().skip(42) {
                    if rng.random_bool(0.3) {
                        *b = rng.random();
                    }
                }
            }
        }
        let expect = answerable(&f, &names);
        let out = h.run(&f);
        match out.action {
            XDP_TX => {
                tx += 1;
                let q =
                    expect.unwrap_or_else(|| panic!("answered a frame the rules refuse: {f:02x?}"));
                let payload = check_answer_frame(&f, &out.frame);
                let a = Message::from_vec(&payload).expect("answer parses");
                assert_eq!(a.id(), q.id());
                assert_eq!(a.queries(), q.queries());
                assert_eq!(a.recursion_desired(), q.recursion_desired());
                assert!(!a.answers().is_empty() || !a.name_servers().is_empty());
            }
            XDP_PASS => {
                pass += 1;
                assert_eq!(out.frame, f, "a passed frame is unchanged");
            }
            other => panic!("unexpected action {other}"),
        }
    }
    assert!(
        tx > 1000 && pass > 1000,
        "both paths exercised: tx {tx}, pass {pass}"
    );
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// An upstream's reply to `q` with `answers` and `authority`.
fn upstream_reply(
    q: &Message,
    rcode: ResponseCode,
    answers: Vec<Record>,
    authority: Vec<Record>,
) -> Message {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .set_response_code(rcode)
        .add_queries(q.queries().iter().cloned());
    m.add_answers(answers);
    m.add_name_servers(authority);
    m
}

fn a_record(owner: &str, ttl: u32, addr: &str) -> Record {
    Record::from_rdata(name(owner), ttl, RData::A(A(ip(addr))))
}

fn soa_record(zone: &str, ttl: u32, minimum: u32) -> Record {
    let soa = SOA::new(
        name(&format!("ns.{zone}")),
        name(&format!("h.{zone}")),
        7,
        60,
        60,
        60,
        minimum,
    );
    Record::from_rdata(name(zone), ttl, RData::SOA(soa))
}

/// Shapes of upstream answers the kernel serves: several addresses, a
/// CNAME chain, NXDOMAIN and NODATA with their SOA.
fn cached_shapes() -> Vec<(Message, Message)> {
    let mut out = Vec::new();
    let q = query(1, "web.example.", RecordType::A);
    let answers = (1..=4)
        .map(|i| a_record("web.example.", 30, &format!("10.9.0.{i}")))
        .collect();
    out.push((
        q.clone(),
        upstream_reply(&q, ResponseCode::NoError, answers, vec![]),
    ));
    let q = query(1, "www.shop.example.", RecordType::A);
    let chain = vec![
        Record::from_rdata(
            name("www.shop.example."),
            40,
            RData::CNAME(CNAME(name("edge.cdn.example."))),
        ),
        Record::from_rdata(
            name("edge.cdn.example."),
            40,
            RData::CNAME(CNAME(name("e1.cdn.example."))),
        ),
        a_record("e1.cdn.example.", 20, "10.9.1.1"),
    ];
    out.push((
        q.clone(),
        upstream_reply(&q, ResponseCode::NoError, chain, vec![]),
    ));
    let q = query(1, "missing.example.", RecordType::A);
    out.push((
        q.clone(),
        upstream_reply(
            &q,
            ResponseCode::NXDomain,
            vec![],
            vec![soa_record("example.", 3600, 3)],
        ),
    ));
    let q = query(1, "web.example.", RecordType::AAAA);
    out.push((
        q.clone(),
        upstream_reply(
            &q,
            ResponseCode::NoError,
            vec![],
            vec![soa_record("example.", 3600, 4)],
        ),
    ));
    out
}

/// `wire` with the TTL fields of `answer` (rendered for a question of
/// `question_len` bytes) zeroed.
fn without_ttls(wire: &[u8], answer: &CachedAnswer, question_len: usize) -> Vec<u8> {
    let mut out = wire.to_vec();
    for at in &answer.ttl_at {
        let at = 12 + question_len + *at as usize;
        out[at..at + 4].fill(0);
    }
    out
}

#[test]
fn root_cached_answers_from_the_kernel_equal_the_daemons_apart_from_ttls() {
    let mut h = Harness::new();
    for (q, reply) in cached_shapes() {
        h.cache_reply(&q, &reply);
        for (id, case, edns, cd) in [
            (0x0101, false, None, false),
            (0x0202, true, Some(false), false),
            (0x0303, true, Some(true), true),
            (0x0404, false, Some(true), false),
        ] {
            let owner = q.queries()[0].name().to_ascii();
            let owner = if case { owner.to_uppercase() } else { owner };
            let mut ask = query(id, &owner, q.queries()[0].query_type());
            ask.set_checking_disabled(cd);
            if let Some(d) = edns {
                ask = with_edns(ask, 0, d, true);
            }
            let f = query_frame(&ask);
            let before = h.maps.counters().unwrap();
            let out = h.run(&f);
            assert_eq!(
                out.action, XDP_TX,
                "{owner} {edns:?} {cd}: answered in the kernel"
            );
            let after = h.maps.counters().unwrap();
            assert_eq!(
                after.get(Counter::AnsweredFromCache) - before.get(Counter::AnsweredFromCache),
                1
            );
            let kernel = check_answer_frame(&f, &out.frame);
            let wire = ask.to_vec().unwrap();
            let asked = Asked::new(&wire, &ask, Transport::Udp).unwrap();
            let (answer, ttl) = h
                .cache
                .lookup(&asked.key, monotonic_ns())
                .expect("in the cache");
            let daemon = answer.render(&asked, ttl).unwrap();
            let qlen = asked.question.len();
            assert_eq!(
                without_ttls(&kernel, &answer, qlen),
                without_ttls(&daemon, &answer, qlen),
                "{owner}: the kernel's bytes are the daemon's"
            );
            let m = Message::from_vec(&kernel).unwrap();
            assert_eq!(m.id(), id);
            assert_eq!(
                m.queries(),
                ask.queries(),
                "the client's question, case and all"
            );
            assert_eq!(m.checking_disabled(), cd);
            assert_eq!(m.response_code(), reply.response_code());
            assert_eq!(m.extensions().as_ref().map(|e| e.flags().dnssec_ok), edns);
            let records: Vec<&Record> = m.answers().iter().chain(m.name_servers()).collect();
            assert!(!records.is_empty());
            for r in records {
                // Capped (60 s), negative answers by the SOA and the cap (5 s).
                assert!(
                    r.ttl() >= 1 && r.ttl() <= ttl && ttl <= 40,
                    "{owner}: ttl {}",
                    r.ttl()
                );
            }
        }
    }
}

#[test]
fn root_expired_oversized_and_unknown_cache_queries_go_to_userspace() {
    let mut h = Harness::new();
    let q = query(1, "soon.example.", RecordType::A);
    h.cache_reply(
        &q,
        &upstream_reply(
            &q,
            ResponseCode::NoError,
            vec![a_record("soon.example.", 1, "10.0.0.9")],
            vec![],
        ),
    );
    h.answered(&query_frame(&q));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    h.passed(&query_frame(&q), Counter::PassExpired);

    // 28 addresses: 460 bytes of records, more than a client without EDNS takes.
    let q = query(1, "many.example.", RecordType::A);
    let many = (0..28)
        .map(|i| a_record("many.example.", 30, &format!("10.8.0.{i}")))
        .collect();
    let reply = upstream_reply(&q, ResponseCode::NoError, many, vec![]);
    let answer =
        CachedAnswer::from_reply(&reply.to_vec().unwrap(), spartan::cache::Ttls::Aged).unwrap();
    assert!(
        answer.kernel_value(1, 1).is_none(),
        "28 TTLs do not fit a kernel entry"
    );
    // A long name and 433 bytes of records (16 TTLs): 523 bytes, more than a client
    // without EDNS takes; one with EDNS gets it from the kernel.
    let owner = format!("{}.big.example.", "a".repeat(60));
    let q = query(1, &owner, RecordType::A);
    let big = (0..15)
        .map(|i| a_record(&owner, 30, &format!("10.8.1.{i}")))
        .collect();
    let mut reply = upstream_reply(&q, ResponseCode::NoError, big, vec![]);
    reply.add_additional(Record::from_rdata(
        name(&owner),
        30,
        RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["x".repeat(180)])),
    ));
    h.cache_reply(&q, &reply);
    h.passed(&query_frame(&q), Counter::PassTooBig);
    let mut large = with_edns(q.clone(), 0, false, false);
    large
        .extensions_mut()
        .as_mut()
        .unwrap()
        .set_max_payload(1232);
    let a = h.answered(&query_frame(&large));
    assert_eq!(a.answers().len(), 15);

    // Another class, the same name: not the cached key.
    let mut chaos = query(1, "web.example.", RecordType::A);
    chaos.queries_mut()[0].set_query_class(hickory_proto::rr::DNSClass::CH);
    h.passed(&query_frame(&chaos), Counter::PassNotInMap);
}

#[test]
fn root_frames_not_for_this_interface_or_from_bad_sources_pass() {
    let mut h = Harness::new();
    let payload = query(1, "ready.spartan.", RecordType::A).to_vec().unwrap();
    h.answered(&Wrapper::default().frame(&payload));
    for mac in [
        [0xff; 6],
        [0x01, 0, 0x5e, 0, 0, 1],
        [0x02, 0, 0, 0, 0, 0x09],
    ] {
        let w = Wrapper {
            dst_mac: mac,
            ..Wrapper::default()
        };
        h.passed(&w.frame(&payload), Counter::PassNotOurMac);
    }
    for src in [
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.251",
        "239.1.2.3",
        "127.0.0.1",
    ] {
        let w = Wrapper {
            src: ip(src),
            ..Wrapper::default()
        };
        h.passed(&w.frame(&payload), Counter::PassBadSource);
    }
    let w = Wrapper {
        sport: 0,
        ..Wrapper::default()
    };
    h.passed(&w.frame(&payload), Counter::PassBadSource);
    // On a loopback interface 127.0.0.0/8 is where host processes ask from.
    h.maps
        .write_interface(TEST_RUN_IFINDEX, SERVER_MAC, true)
        .unwrap();
    h.answered(
        &Wrapper {
            src: ip("127.0.0.1"),
            ..Wrapper::default()
        }
        .frame(&payload),
    );
    // An interface the program was never told of.
    h.maps.remove_interface(TEST_RUN_IFINDEX);
    h.passed(&Wrapper::default().frame(&payload), Counter::PassNotOurMac);
    assert_eq!(Wrapper::default().src, CLIENT_IP);
}

/// The interface slot of `ifindex`, read from the pinned array.
fn interface_slot(h: &Harness, ifindex: u32) -> InterfaceSlot {
    let data =
        aya::maps::MapData::from_pin(h.pins.path().join(map_names::INTERFACE_SLOTS)).unwrap();
    let slots: aya::maps::Array<_, InterfaceSlot> = aya::maps::Map::from_map_data(data)
        .unwrap()
        .try_into()
        .unwrap();
    slots
        .get(&spartan_common::interface_slot(ifindex), 0)
        .unwrap()
}

#[test]
fn root_interfaces_sharing_a_slot_are_both_known() {
    let mut h = Harness::new();
    let payload = query(1, "ready.spartan.", RecordType::A).to_vec().unwrap();
    let other = TEST_RUN_IFINDEX + INTERFACE_SLOTS;
    let other_mac = [0x02, 0, 0, 0, 0, 0x99];
    h.maps.remove_interface(TEST_RUN_IFINDEX);
    assert_eq!(interface_slot(&h, TEST_RUN_IFINDEX).ifindex, 0, "freed");
    h.maps.write_interface(other, other_mac, false).unwrap();
    h.maps
        .write_interface(TEST_RUN_IFINDEX, SERVER_MAC, false)
        .unwrap();
    // The slot is the other interface's: this one is found in the hash map,
    // with its own address (not the slot's).
    assert_eq!(interface_slot(&h, TEST_RUN_IFINDEX).ifindex, other);
    h.answered(&Wrapper::default().frame(&payload));
    let to_other = Wrapper {
        dst_mac: other_mac,
        ..Wrapper::default()
    };
    h.passed(&to_other.frame(&payload), Counter::PassNotOurMac);
    // The other goes: its slot passes to the interface left.
    h.maps.remove_interface(other);
    assert_eq!(
        interface_slot(&h, TEST_RUN_IFINDEX).ifindex,
        TEST_RUN_IFINDEX
    );
    h.answered(&Wrapper::default().frame(&payload));
    h.passed(&to_other.frame(&payload), Counter::PassNotOurMac);
    h.maps.remove_interface(TEST_RUN_IFINDEX);
    assert_eq!(interface_slot(&h, TEST_RUN_IFINDEX).ifindex, 0);
    h.passed(&Wrapper::default().frame(&payload), Counter::PassNotOurMac);
}

#[test]
fn root_the_dns_port_follows_the_configuration() {
    let mut h = Harness::on_port(5300);
    let payload = query(1, "ready.spartan.", RecordType::A).to_vec().unwrap();
    h.passed(&Wrapper::default().frame(&payload), Counter::PassNotUdpDns);
    let w = Wrapper {
        dport: 5300,
        ..Wrapper::default()
    };
    let f = w.frame(&payload);
    let out = h.run(&f);
    assert_eq!(out.action, XDP_TX);
    // The answer comes from port 5300.
    assert_eq!(&out.frame[34..36], &5300u16.to_be_bytes());
}

/// Two names of type A whose keys share a bit of the presence filter.
fn names_sharing_a_presence_bit() -> (String, String) {
    let mut seen = std::collections::HashMap::new();
    for i in 0..100_000 {
        let n = format!("n{i}.shared.example.");
        let q = query(1, &n, RecordType::A);
        let key = Asked::new(&q.to_vec().unwrap(), &q, Transport::Udp)
            .unwrap()
            .key
            .kernel()
            .unwrap();
        if let Some(other) = seen.insert(key.presence_bit(), n.clone()) {
            return (other, n);
        }
    }
    panic!("no two of 100,000 names share one of 2^18 bits");
}

#[test]
fn root_presence_filter_follows_the_entries() {
    let mut h = Harness::new();
    let (first, second) = names_sharing_a_presence_bit();
    let cached = |h: &Harness, n: &str| {
        let q = query(1, n, RecordType::A);
        let reply = upstream_reply(
            &q,
            ResponseCode::NoError,
            vec![a_record(n, 30, "10.0.0.7")],
            vec![],
        );
        h.cache
            .insert(
                &Asked::new(&q.to_vec().unwrap(), &q, Transport::Udp)
                    .unwrap()
                    .key,
                &reply.to_vec().unwrap(),
                false,
                monotonic_ns(),
            )
            .expect("cacheable");
        query_frame(&q)
    };
    let first_frame = cached(&h, &first);
    let second_frame = cached(&h, &second);
    h.answered(&first_frame);
    h.answered(&second_frame);
    // The bit stays while one of its two keys is there.
    let wire = |n: &str| {
        use hickory_proto::serialize::binary::BinEncodable;
        Name::from_ascii(n).unwrap().to_bytes().unwrap()
    };
    assert_eq!(h.cache.flush(Some(&wire(&first))), 1);
    h.passed(&first_frame, Counter::PassNotInMap);
    h.answered(&second_frame);
    assert_eq!(h.cache.flush(Some(&wire(&second))), 1);
    h.passed(&second_frame, Counter::PassNotInMap);

    // An entry written behind the table's back has no bit: the program
    // does not look it up...
    let third_frame = cached(&h, "third.example.");
    let entry = h
        .maps
        .answers()
        .unwrap()
        .into_iter()
        .find(|(_, v)| v.expires_ns != 0)
        .expect("the cached entry");
    assert_eq!(h.cache.flush(None), 1);
    h.passed(&third_frame, Counter::PassNotInMap);
    raw_answers(&h).insert(entry.0.hash(), entry.1, 0).unwrap();
    h.passed(&third_frame, Counter::PassNotInMap);
    // ...until a table opened on the maps (a restarted daemon's) finds it.
    let _restarted = KernelMaps::open_pinned(h.pins.path())
        .unwrap()
        .answer_table()
        .unwrap();
    h.answered(&third_frame);
}

/// The answers map, opened apart from the harness's table (to write it
/// behind the table's back).
fn raw_answers(h: &Harness) -> aya::maps::HashMap<aya::maps::MapData, u64, AnswerValue> {
    let raw = aya::maps::MapData::from_pin(h.pins.path().join(map_names::ANSWERS)).unwrap();
    aya::maps::Map::from_map_data(raw)
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn root_an_entry_answers_only_the_key_it_holds() {
    let mut h = Harness::new();
    let web = query_frame(&query(1, "web.example.", RecordType::A));
    h.passed(&web, Counter::PassNotInMap);
    let q = query(1, "web.example.", RecordType::A);
    h.cache_reply(
        &q,
        &upstream_reply(
            &q,
            ResponseCode::NoError,
            vec![a_record("web.example.", 30, "10.0.0.8")],
            vec![],
        ),
    );
    h.answered(&web);
    // The map is keyed by a hash of the key. Were two keys to share one,
    // the entry under it must not answer the other: written here behind
    // the table's back, ready.spartan's answer under web.example's hash.
    let answers = h.maps.answers().unwrap();
    let (web_key, _) = answers
        .iter()
        .find(|(k, v)| v.expires_ns != 0 && k.flags == 0)
        .unwrap();
    let (_, ready) = answers
        .iter()
        .find(|(k, _)| spartan::zone::key_name(k) == "ready.spartan.")
        .unwrap();
    raw_answers(&h).insert(web_key.hash(), ready, 0).unwrap();
    h.passed(&web, Counter::PassNotInMap);
    h.answered(&query_frame(&query(1, "ready.spartan.", RecordType::A)));
}

#[test]
fn root_the_listen_addresses_can_shrink_and_change() {
    let mut h = Harness::new();
    let to = |dst: &str| {
        Wrapper {
            dst: ip(dst),
            ..Wrapper::default()
        }
        .frame(&query(1, "ready.spartan.", RecordType::A).to_vec().unwrap())
    };
    for dst in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        h.answered(&to(dst));
    }
    h.maps
        .write_listen_addrs(&[ip("198.51.100.3"), ip("198.51.100.1")])
        .unwrap();
    h.answered(&to("198.51.100.1"));
    h.passed(&to("198.51.100.2"), Counter::PassNotOurAddress);
    h.answered(&to("198.51.100.3"));
    h.maps.write_listen_addrs(&[]).unwrap();
    h.passed(&to("198.51.100.1"), Counter::PassNotOurAddress);
    let too_many: Vec<Ipv4Addr> = (0..64).map(|i| Ipv4Addr::new(10, 1, 0, i)).collect();
    assert!(h.maps.write_listen_addrs(&too_many).is_err());
}
