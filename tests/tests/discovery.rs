//! Master discovery: Exhibitor, the master list file, the `zk` zone they
//! feed, in the daemon and in the kernel.

use std::{sync::atomic::Ordering, time::Duration};

use hickory_proto::rr::RecordType;
use tests::{
    client::{self},
    daemon::Spartan,
    exhibitor::{Exhibitor, Mode},
    netns::Netns,
    nsd::Nsd,
    pins::PinDir,
    setup::{TempConfig, server, spartan_node},
    zk::{stays_zk, wait_zk},
};

fn members(hosts: &[(&str, i64)]) -> Mode {
    Mode::Members(
        hosts
            .iter()
            .map(|(h, c)| (h.to_string(), *c, false))
            .collect(),
    )
}

#[test]
fn root_exhibitor_discovery_follows_the_cluster_and_survives_its_failures() {
    let node = spartan_node("spm");
    let pins = PinDir::new();
    // The upstream resolver, through which member host names resolve.
    let _resolver = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver");
    let _m1 = Nsd::start(&node, "127.0.1.1:5354".parse().unwrap(), "master-1");
    let _m2 = Nsd::start(&node, "127.0.1.2:5354".parse().unwrap(), "master-2");
    let ex = Exhibitor::start(
        &node,
        "127.0.0.1:8181".parse().unwrap(),
        members(&[("10.0.0.1", 3)]),
    );
    let config = TempConfig::new(&format!(
        "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = [\"127.0.0.1:5353\"]\nmesos_port = 5354\n\
[masters]\nsource = \"exhibitor_uri\"\nexhibitor_uri = \"{}\"\npoll_interval_ms = 200\nretry_interval_ms = 200\nhttp_timeout_ms = 500\n\
[xdp]\npin_dir = \"{}\"\ndetach_on_exit = true\n",
        ex.url,
        pins.path().display()
    ));
    let s = Spartan::start(
        Some(&node),
        &[
            "--log-format".into(),
            "json".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        server(),
    );

    wait_zk(&node, pins.path(), &["10.0.0.1"; 5], "one master");
    // Serving members first, host names resolved through the upstream
    // resolver (www.example.net is 192.0.2.80 there), a member whose name
    // is invalid or does not resolve dropped: A B C A B.
    ex.set(members(&[
        ("10.0.0.3", 1),
        ("10.0.0.1", 3),
        ("bad host!", 3),
        ("www.example.net", 3),
        ("nx.example.net", 3),
    ]));
    let three = [
        "10.0.0.1",
        "192.0.2.80",
        "10.0.0.3",
        "10.0.0.1",
        "192.0.2.80",
    ];
    wait_zk(&node, pins.path(), &three, "three masters");

    for (fault, what) in [
        (Mode::Status(500), "HTTP 500"),
        (Mode::Hang, "a hung connection"),
        (Mode::Garbage, "garbage JSON"),
        (Mode::Members(vec![]), "an empty list"),
        (Mode::Huge, "a reply over the size cap"),
    ] {
        let before = ex.requests.load(Ordering::Relaxed);
        ex.set(fault);
        stays_zk(&node, pins.path(), &three, what);
        assert!(
            ex.requests.load(Ordering::Relaxed) > before,
            "{what}: still polling"
        );
    }

    // Logged once per change of state, not once per poll (about 30 polls
    // failed above), as JSON lines with --log-format json.
    let log = s.log_text();
    let failures = log.matches("master source failed").count();
    assert!(
        (4..=5).contains(&failures),
        "{failures} failure lines:\n{log}"
    );
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }

    let seven: Vec<String> = (11..=17).map(|i| format!("10.0.0.{i}")).collect();
    ex.set(Mode::Members(
        seven.iter().map(|h| (h.clone(), 3, false)).collect(),
    ));
    wait_zk(
        &node,
        pins.path(),
        &[
            "10.0.0.11",
            "10.0.0.12",
            "10.0.0.13",
            "10.0.0.14",
            "10.0.0.15",
        ],
        "seven masters",
    );
    ex.set(members(&[("10.0.0.99", 3)]));
    wait_zk(&node, pins.path(), &["10.0.0.99"; 5], "back to one");

    // `*.mesos` follows the list in the same step.
    for (master, label) in [("127.0.1.1", "master-1"), ("127.0.1.2", "master-2")] {
        ex.set(members(&[(master, 3)]));
        wait_zk(&node, pins.path(), &[master; 5], label);
        let m = client::query_in(
            Some(&node),
            server(),
            "who.mesos.",
            RecordType::TXT,
            Duration::from_secs(3),
        )
        .unwrap();
        let txt: Vec<String> = m.answers().iter().map(|r| r.data().to_string()).collect();
        assert_eq!(txt, vec![label.to_string()]);
    }
}

/// The serial of the `zk` SOA, asked of the daemon over TCP.
fn zk_serial(node: &Netns) -> u32 {
    let out = client::dig(
        "dig",
        Some(node),
        server(),
        &["+tcp", "+short", "zk", "SOA"],
    );
    out.split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no SOA serial in {out:?}"))
}

#[test]
fn root_a_master_list_file_is_reread_when_it_changes() {
    let node = spartan_node("spm");
    let pins = PinDir::new();
    let dir = std::env::temp_dir().join(tests::netns::unique("ml"));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("master_list");
    std::fs::write(&list, "[\"10.0.0.1\"]").unwrap();
    let config = TempConfig::new(&format!(
        "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = [\"127.0.0.1:5353\"]\n\
[masters]\nsource = \"master_list\"\nmaster_list_file = \"{}\"\nfile_check_interval_ms = 100\nretry_interval_ms = 60000\n\
[xdp]\npin_dir = \"{}\"\ndetach_on_exit = true\n",
        list.display(),
        pins.path().display()
    ));
    let _s = Spartan::start(
        Some(&node),
        &["--config".into(), config.display().to_string()],
        server(),
    );
    wait_zk(&node, pins.path(), &["10.0.0.1"; 5], "initial file");
    let first_serial = zk_serial(&node);
    std::fs::write(&list, "[\"10.0.0.1\", \"10.0.0.2\"]").unwrap();
    let two = ["10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2", "10.0.0.1"];
    wait_zk(&node, pins.path(), &two, "edited file");
    let second_serial = zk_serial(&node);
    assert!(
        second_serial > first_serial,
        "the zk SOA serial grows with the zone: {first_serial} then {second_serial}"
    );
    std::fs::write(&list, "not json").unwrap();
    stays_zk(&node, pins.path(), &two, "garbage file");
    std::fs::remove_file(&list).unwrap();
    stays_zk(&node, pins.path(), &two, "missing file");
    std::fs::write(&list, "[\"10.0.0.5\"]").unwrap();
    wait_zk(&node, pins.path(), &["10.0.0.5"; 5], "file back");
    let _ = std::fs::remove_dir_all(dir);
}
