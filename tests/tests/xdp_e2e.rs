//! End to end through the kernel: a client namespace and a node namespace
//! joined by a veth pair, the daemon in the node namespace, dig and kdig in
//! the client; then the same through generic XDP on the node's `lo`.

use std::net::SocketAddr;

use spartan::fastpath::KernelMaps;
use spartan_common::Counter;
use tests::{
    ClientNode,
    client::{dig, short_lines},
    daemon::Spartan,
    netns::Netns,
    nsd::Nsd,
    pins::PinDir,
    require_root,
};

#[test]
fn root_kernel_answers_over_veth_and_lo_and_userspace_the_rest() {
    require_root();
    let pins_node = PinDir::new();
    let lab = ClientNode::new("spc", "spn");
    let (client, node, link) = (&lab.client, &lab.node, &lab.link);
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let _nsd = Nsd::start(node, "127.0.0.1:5353".parse().unwrap(), "nsd-1");

    let server: SocketAddr = "198.51.100.1:53".parse().unwrap();
    let args = tests::args(&[
        "--listen",
        "198.51.100.1",
        "--upstream",
        "127.0.0.1:5353",
        "--masters",
        "10.0.0.1,10.0.0.2,10.0.0.3",
        "--xdp-interface",
        &link.b_if,
        "--pin-dir",
        pins_node.path().to_str().unwrap(),
        "--detach-on-exit",
    ]);
    let mut spartan = Spartan::start(Some(node), &args, server);
    assert!(
        spartan.log_text().contains("mode=generic"),
        "a veth gets generic XDP (native XDP_TX on a veth loses answers):\n{}",
        spartan.log_text()
    );
    let maps = KernelMaps::open_pinned(pins_node.path()).unwrap();

    let zk = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.2"];
    for ns in [client, node] {
        let before = maps.counters().unwrap();
        for tool in ["dig", "kdig"] {
            let out = dig(tool, Some(ns), server, &["+short", "ready.spartan", "A"]);
            assert_eq!(short_lines(&out), vec!["127.0.0.1"], "{tool}: {out}");
            for (i, addr) in zk.iter().enumerate() {
                let out = dig(
                    tool,
                    Some(ns),
                    server,
                    &["+short", &format!("zk-{}.zk", i + 1), "A"],
                );
                assert_eq!(short_lines(&out), vec![addr.to_string()], "{tool}: {out}");
            }
        }
        let after = maps.counters().unwrap();
        assert_eq!(
            after.get(Counter::Answered) - before.get(Counter::Answered),
            12,
            "all 12 answered in the kernel ({})",
            ns.name
        );

        // Anything else goes up to the daemon, which forwards it.
        let before = after;
        let out = dig("dig", Some(ns), server, &["+short", "www.example.net", "A"]);
        assert_eq!(short_lines(&out), vec!["192.0.2.80"], "{out}");
        let out = dig(
            "kdig",
            Some(ns),
            server,
            &["+short", "ready.spartan", "AAAA"],
        );
        assert!(short_lines(&out).is_empty(), "{out}");
        let after = maps.counters().unwrap();
        // The forwarded name is cached after its first miss, and the
        // kernel answers it from then on (the second namespace's query).
        assert!(after.get(Counter::Answered) - before.get(Counter::Answered) <= 1);
        assert!(after.get(Counter::PassNotInMap) > before.get(Counter::PassNotInMap));
    }

    let status = spartan.stop().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
}

#[test]
fn root_zk_answers_survive_the_daemon_and_ready_lapses_with_it() {
    require_root();
    let pins = PinDir::new();
    let node = Netns::new("spk");
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let server: SocketAddr = "198.51.100.1:53".parse().unwrap();
    let args = tests::args(&[
        "--listen",
        "198.51.100.1",
        "--masters",
        "10.0.0.7",
        "--upstream",
        "127.0.0.1:5353",
        "--pin-dir",
        pins.path().to_str().unwrap(),
    ]);
    let mut spartan = Spartan::start(Some(&node), &args, server);
    assert!(spartan.stop().unwrap().success());
    // The program stays attached with its maps: the kernel still answers zk.
    let out = dig("dig", Some(&node), server, &["+short", "zk-4.zk"]);
    assert_eq!(short_lines(&out), vec!["10.0.0.7"], "{out}");
    // ready.spartan needs a live daemon: after the heartbeat lapses (3 s)
    // it goes to userspace, where nobody answers.
    std::thread::sleep(std::time::Duration::from_millis(3300));
    let out = dig("dig", Some(&node), server, &["+short", "ready.spartan"]);
    assert!(short_lines(&out).iter().all(|l| l != "127.0.0.1"), "{out}");
    let maps = KernelMaps::open_pinned(pins.path()).unwrap();
    assert!(maps.counters().unwrap().get(Counter::PassStaleHeartbeat) >= 1);
    // `spartan stats` reads the pinned maps while the daemon is down.
    let out = std::process::Command::new(tests::daemon::spartan_bin())
        .args([
            "stats",
            "--pin-dir",
            pins.path().to_str().unwrap(),
            "--http",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("pass_stale_heartbeat")
            && text.contains("zk-4.zk.")
            && text.contains("10.0.0.7"),
        "{text}"
    );
    assert!(text.contains("daemon: not running"), "{text}");
    // A new daemon takes the pinned link over and beats again.
    let mut again = Spartan::start(Some(&node), &args, server);
    let out = dig("kdig", Some(&node), server, &["+short", "ready.spartan"]);
    assert_eq!(short_lines(&out), vec!["127.0.0.1"]);
    assert!(again.stop().unwrap().success());
    // Dropping `pins` removes the link pins: the program is detached.
}

/// UDP queries the daemon received (the kernel answered the rest).
fn daemon_udp_queries(node: &Netns) -> f64 {
    tests::metrics::scrape(node)
        .iter()
        .filter(|(k, _)| k.starts_with("spartan_queries_total{") && k.contains("protocol=udp"))
        .map(|(_, v)| v)
        .sum()
}

/// 1,000 `ready.spartan` and `zk-1.zk` queries from `client` (at `source`):
/// all answered, all by the kernel, none by the daemon.
fn all_answered_by_the_kernel(node: &Netns, client: &Netns, source: &str, pins: &PinDir) {
    let maps = KernelMaps::open_pinned(pins.path()).unwrap();
    // The daemon's first self-check (at start) is over; the next one is a
    // minute away.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (kernel_before, daemon_before) = (maps.counters().unwrap(), daemon_udp_queries(node));
    let tally = tests::load::Load {
        source: source.parse().unwrap(),
        server: "198.51.100.1:53".parse().unwrap(),
        count: 1000,
        rate: 500,
        rtype: hickory_proto::rr::RecordType::A,
        linger: std::time::Duration::from_millis(500),
    }
    .run(client, |i| {
        if i % 2 == 0 {
            "ready.spartan."
        } else {
            "zk-1.zk."
        }
        .to_string()
    });
    assert_eq!((tally.answered, tally.noerror), (1000, 1000), "{tally:?}");
    let kernel =
        maps.counters().unwrap().get(Counter::Answered) - kernel_before.get(Counter::Answered);
    assert_eq!(kernel, 1000, "every answer from the kernel");
    assert_eq!(
        daemon_udp_queries(node) - daemon_before,
        0.0,
        "none reached the daemon"
    );
}

/// The daemon's arguments, with a self-check slow enough (its first run is at
/// start) that its own UDP question never falls in a measured window.
fn kernel_args(pins: &PinDir, interface: &str) -> Vec<String> {
    let config = std::env::temp_dir().join(format!("{}.toml", tests::netns::unique("slowcheck")));
    std::fs::write(&config, "self_check_interval_ms = 60000\n").unwrap();
    tests::args(&[
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "198.51.100.1",
        "--upstream",
        "127.0.0.1:5353",
        "--masters",
        "10.0.0.1",
        "--xdp-interface",
        interface,
        "--pin-dir",
        pins.path().to_str().unwrap(),
        "--detach-on-exit",
    ])
}

#[test]
fn root_a_plain_container_on_a_routed_veth_gets_every_answer_from_the_kernel() {
    let pins = PinDir::new();
    let lab = ClientNode::new("rtc", "rtn");
    lab.node
        .ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let _s = Spartan::start(
        Some(&lab.node),
        &kernel_args(&pins, &lab.link.b_if),
        "198.51.100.1:53".parse().unwrap(),
    );
    all_answered_by_the_kernel(&lab.node, &lab.client, "192.0.2.1", &pins);
}

#[test]
fn root_plain_containers_on_a_bridge_get_every_answer_from_the_kernel() {
    let pins = PinDir::new();
    let lab = tests::BridgedNode::new("brn", 2);
    lab.node
        .ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let s = Spartan::start(
        Some(&lab.node),
        &kernel_args(&pins, &lab.bridge),
        "198.51.100.1:53".parse().unwrap(),
    );
    assert!(s.log_text().contains("mode=generic"), "{}", s.log_text());
    for (i, container) in lab.containers.iter().enumerate() {
        all_answered_by_the_kernel(&lab.node, container, &format!("192.0.2.{}", 11 + i), &pins);
    }
}

/// Until `deadline`: is `ready.spartan` from `client` answered by the kernel?
fn kernel_answers_within(client: &Netns, pins: &PinDir, within: std::time::Duration) -> bool {
    let maps = KernelMaps::open_pinned(pins.path()).unwrap();
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        let before = maps.counters().unwrap().get(Counter::Answered);
        let answered = tests::client::query_in(
            Some(client),
            "198.51.100.1:53".parse().unwrap(),
            "ready.spartan.",
            hickory_proto::rr::RecordType::A,
            std::time::Duration::from_millis(100),
        )
        .is_ok();
        if answered && maps.counters().unwrap().get(Counter::Answered) > before {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// A plain container joined to `node` by a veth whose node end is named
/// `node_if`: 192.0.2.1 inside, 192.0.2.2 on the node, 198.51.100.0/24
/// routed through the node.
fn plain_container(node: &Netns, prefix: &str, node_if: &str) -> (Netns, tests::netns::Link) {
    let client = Netns::new(prefix);
    let link = tests::netns::veth_named(
        &client,
        "eth0",
        "192.0.2.1/24",
        node,
        node_if,
        "192.0.2.2/24",
    );
    client.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
    (client, link)
}

#[test]
fn root_containers_that_come_and_go_are_followed() {
    require_root();
    let pins = PinDir::new();
    let node = Netns::new("fln");
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    // A pattern: the node-side ends of the test's veths are named vb….
    let s = Spartan::start(
        Some(&node),
        &kernel_args(&pins, "vb*"),
        "198.51.100.1:53".parse().unwrap(),
    );
    for round in 0..2 {
        // A container starts (the second time under the same interface name).
        let (client, link) = plain_container(&node, "flc", "vbflw0");
        assert!(
            kernel_answers_within(&client, &pins, std::time::Duration::from_secs(1)),
            "round {round}: no kernel answer within a second of the veth coming up:\n{}",
            s.log_text()
        );
        all_answered_by_the_kernel(&node, &client, "192.0.2.1", &pins);
        // It stops: its namespace, and with it the veth pair, goes.
        let pin = spartan::fastpath::FastPath::link_pin_path(pins.path(), &link.b_if);
        assert!(pin.exists());
        drop(client);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while pin.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !pin.exists(),
            "round {round}: the pin of a deleted veth is removed"
        );
    }
    let log = s.log_text();
    assert!(!log.contains("ERROR"), "no error:\n{log}");
    assert!(log.contains("interface gone: XDP released"), "{log}");
}

#[test]
fn root_a_severed_link_pin_does_not_disable_the_kernel_path() {
    require_root();
    let pins = PinDir::new();
    let node = Netns::new("svn");
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let server: SocketAddr = "198.51.100.1:53".parse().unwrap();
    let mut args = kernel_args(&pins, "vbsev0");
    args.retain(|a| a != "--detach-on-exit");
    let (client, link) = plain_container(&node, "svc", "vbsev0");
    let mut first = Spartan::start(Some(&node), &args, server);
    first.stop();
    drop(first);
    // The container goes while no daemon runs: its link pin is left severed.
    drop(client);
    let pin = spartan::fastpath::FastPath::link_pin_path(pins.path(), &link.b_if);
    assert!(pin.exists(), "a severed pin is left behind");
    // The container comes back under the same name; the next daemon serves
    // it, and lo, from the kernel.
    let (client, _link) = plain_container(&node, "svc", "vbsev0");
    let second = Spartan::start(Some(&node), &args, server);
    all_answered_by_the_kernel(&node, &client, "192.0.2.1", &pins);
    all_answered_by_the_kernel(&node, &node, "127.0.0.1", &pins);
    assert!(
        second.log_text().contains("pinned link defunct: replaced"),
        "{}",
        second.log_text()
    );
}
