//! Configuration sources, master discovery, the listen addresses, restarts.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};
use spartan::{fastpath::KernelMaps, zone};
use tests::{
    ClientNode,
    client::{self, query_message, tcp_connect, tcp_recv, tcp_send},
    daemon::Spartan,
    exhibitor::{Exhibitor, Mode},
    netns::{Netns, sh},
    nsd::Nsd,
    pins::PinDir,
    require_root,
};

fn server() -> SocketAddr {
    "198.51.100.1:53".parse().unwrap()
}

fn write_config(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(tests::netns::unique("cfg"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("spartan.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// zk-1..zk-5 as the daemon answers them (over TCP: userspace, not XDP).
fn daemon_zk(node: &Netns) -> Vec<String> {
    let mut stream = tcp_connect(Some(node), server()).expect("TCP to spartan");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    (1..=5)
        .map(|i| {
            tcp_send(
                &mut stream,
                &query_message(i, &format!("zk-{i}.zk."), RecordType::A)
                    .to_vec()
                    .unwrap(),
            )
            .unwrap();
            let m = Message::from_vec(&tcp_recv(&mut stream).unwrap()).unwrap();
            m.answers()
                .iter()
                .map(|r| match r.data() {
                    RData::A(a) => a.0.to_string(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// zk-1..zk-5 in the kernel's answers map.
fn kernel_zk(pins: &Path) -> Vec<String> {
    let answers = KernelMaps::open_pinned(pins).unwrap().answers().unwrap();
    (1..=5)
        .map(|i| {
            let key = zone::answer_key(&format!("zk-{i}.zk.").parse().unwrap(), 1).unwrap();
            answers
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(k, v)| spartan::cache::answer::kernel_message(k, v))
                .map(|m| {
                    m.answers()
                        .iter()
                        .map(|r| r.data().to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Waits (bounded) until both the daemon and the kernel serve `want`.
fn wait_zk(node: &Netns, pins: &Path, want: &[&str], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (d, k) = (daemon_zk(node), kernel_zk(pins));
        if d == want && k == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: daemon {d:?}, kernel {k:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The zk records stay `want` for a while (a failure keeps the last list).
fn stays_zk(node: &Netns, pins: &Path, want: &[&str], what: &str) {
    for _ in 0..8 {
        assert_eq!(daemon_zk(node), want, "{what}: daemon");
        assert_eq!(kernel_zk(pins), want, "{what}: kernel");
        std::thread::sleep(Duration::from_millis(150));
    }
}

fn node() -> Netns {
    require_root();
    let node = Netns::new("spm");
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    node
}

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
    let node = node();
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
    let config = write_config(&format!(
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
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
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
    let node = node();
    let pins = PinDir::new();
    let dir = std::env::temp_dir().join(tests::netns::unique("ml"));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("master_list");
    std::fs::write(&list, "[\"10.0.0.1\"]").unwrap();
    let config = write_config(&format!(
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
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
}

#[test]
fn root_zk_queries_are_answered_all_through_a_restart() {
    let pins_node = PinDir::new();
    let lab = ClientNode::new("spx", "spq");
    let (client_ns, node, link) = (&lab.client, &lab.node, &lab.link);
    let args = tests::args(&[
        "--listen",
        "198.51.100.1",
        "--masters",
        "10.0.0.1,10.0.0.2,10.0.0.3",
        "--upstream",
        "127.0.0.1:5353",
        "--xdp-interface",
        &link.b_if,
        "--pin-dir",
        pins_node.path().to_str().unwrap(),
    ]);
    let mut first = Spartan::start(Some(node), &args, server());

    // A client asks zk-1.zk every 10 ms, 300 times, while the daemon restarts.
    let socket = client::udp_socket(Some(client_ns));
    let running = Arc::new(AtomicBool::new(true));
    let (answered, asked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, a, q) = (running.clone(), answered.clone(), asked.clone());
    let asker = std::thread::spawn(move || {
        let mut failures = Vec::new();
        for i in 0..300u16 {
            if !r.load(Ordering::Relaxed) && i > 100 {
                break;
            }
            q.fetch_add(1, Ordering::Relaxed);
            let wire = query_message(i, "zk-1.zk.", RecordType::A)
                .to_vec()
                .unwrap();
            match client::exchange_udp(&socket, server(), &wire, Duration::from_secs(1)) {
                Ok(reply) if Message::from_vec(&reply).is_ok_and(|m| m.answers().len() == 1) => {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                other => failures.push((i, format!("{other:?}"))),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        failures
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(first.stop().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    let _second = Spartan::start(Some(node), &args, server());
    std::thread::sleep(Duration::from_millis(300));
    running.store(false, Ordering::Relaxed);
    let failures = asker.join().unwrap();
    assert!(
        failures.is_empty(),
        "unanswered during the restart: {failures:?}"
    );
    assert_eq!(
        answered.load(Ordering::Relaxed),
        asked.load(Ordering::Relaxed)
    );
    assert!(asked.load(Ordering::Relaxed) >= 100);
}

#[test]
fn root_the_listen_addresses_are_created_and_spartan_down_removes_them() {
    require_root();
    let pins = PinDir::new();
    let ns = Netns::new("spi");
    let addrs_of =
        |ns: &Netns| String::from_utf8_lossy(&ns.ip(&["-br", "addr", "show"]).stdout).to_string();
    let links_of =
        |ns: &Netns| String::from_utf8_lossy(&ns.ip(&["-br", "link", "show"]).stdout).to_string();
    let (addrs_before, links_before) = (addrs_of(&ns), links_of(&ns));
    let args = tests::args(&[
        "--upstream",
        "127.0.0.1:5353",
        "--pin-dir",
        pins.path().to_str().unwrap(),
    ]);
    for round in 0..2 {
        // Default listen addresses: 198.51.100.1-3; created twice is fine.
        let mut s = Spartan::start(Some(&ns), &args, server());
        let addrs = addrs_of(&ns);
        for a in ["198.51.100.1/32", "198.51.100.2/32", "198.51.100.3/32"] {
            assert!(addrs.contains(a), "round {round}: {a} missing in {addrs}");
        }
        for probe in ["198.51.100.2:53", "198.51.100.3:53"] {
            let m = client::query_in(
                Some(&ns),
                probe.parse().unwrap(),
                "ready.spartan.",
                RecordType::A,
                Duration::from_secs(3),
            );
            assert!(m.is_ok(), "answers on {probe}");
        }
        let status = s.stop().unwrap();
        assert!(
            status.success(),
            "round {round}: {status}\n{}",
            s.log_text()
        );
    }
    let bin = tests::daemon::spartan_bin();
    sh(ns.command(bin.to_str().unwrap()).args([
        "down",
        "--pin-dir",
        pins.path().to_str().unwrap(),
    ]));
    assert_eq!(addrs_of(&ns), addrs_before, "addresses as they were");
    assert_eq!(links_of(&ns), links_before, "links as they were");
    assert!(!pins.path().exists(), "pins removed");
}

#[test]
fn root_sighup_reloads_the_configuration_without_dropping_a_query() {
    let node = node();
    let _r1 = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver-1");
    let _r2 = Nsd::start(&node, "127.0.0.2:5353".parse().unwrap(), "resolver-2");
    let config = write_config(
        "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = [\"127.0.0.1:5353\"]\n[xdp]\nenabled = false\n",
    );
    let s = Spartan::start(
        Some(&node),
        &["--config".into(), config.display().to_string()],
        server(),
    );
    let who = || {
        let m = client::query_in(
            Some(&node),
            server(),
            "who.example.net.",
            RecordType::TXT,
            Duration::from_secs(2),
        )
        .expect("answered");
        m.answers()
            .iter()
            .map(|r| r.data().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(who(), vec!["resolver-1"]);
    // A client keeps asking while the configuration is swapped.
    let socket = client::udp_socket(Some(&node));
    let asker = std::thread::spawn(move || {
        let mut lost = 0;
        for i in 0..150u16 {
            let wire = query_message(i, "www.example.net.", RecordType::A)
                .to_vec()
                .unwrap();
            if client::exchange_udp(&socket, server(), &wire, Duration::from_secs(2)).is_err() {
                lost += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        lost
    });
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&config, "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = [\"127.0.0.2:5353\"]\n[xdp]\nenabled = false\n").unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    assert_eq!(asker.join().unwrap(), 0, "no query lost across the reload");
    let deadline = Instant::now() + Duration::from_secs(5);
    while who() != vec!["resolver-2"] {
        assert!(Instant::now() < deadline, "reload took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A broken file on SIGHUP keeps the running configuration.
    std::fs::write(&config, "upstream_resolvers = [\"198.51.100.1\"]\n").unwrap();
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(who(), vec!["resolver-2"]);
    // So does one that leaves no usable upstream, and the log names the fix.
    std::fs::write(
        &config,
        "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = []\n[xdp]\nenabled = false\n",
    )
    .unwrap();
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(who(), vec!["resolver-2"]);
    let log = s.log_text();
    assert!(
        log.contains("no usable upstream") && log.contains("keeping the running one"),
        "{log}"
    );
    // Keys that need a restart are named, the rest applied.
    std::fs::write(&config, "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = [\"127.0.0.1:5353\"]\nmax_tcp_connections = 7\n[http]\nlisten = \"127.0.0.1:62081\"\n[xdp]\nenabled = false\n").unwrap();
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while who() != vec!["resolver-1"] {
        assert!(Instant::now() < deadline, "reload took effect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.log_text();
    let warning = log
        .lines()
        .find(|l| l.contains("take effect only after a restart"))
        .unwrap_or_else(|| panic!("no restart warning:\n{log}"));
    assert!(
        warning.contains("max_tcp_connections") && warning.contains("http.listen"),
        "{warning}"
    );
    assert!(!warning.contains("upstream_resolvers"), "{warning}");
    assert!(
        s.log_text().contains("keeping the running one"),
        "{}",
        s.log_text()
    );
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
}

#[test]
fn root_without_a_usable_upstream_check_config_and_run_name_the_fix() {
    let node = node();
    // What genresolv writes while Spartan runs: only Spartan's addresses.
    // `ip netns exec` shows /etc/netns/NAME/resolv.conf as /etc/resolv.conf.
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let etc = RemoveOnDrop(PathBuf::from("/etc/netns").join(&node.name));
    std::fs::create_dir_all(&etc.0).unwrap();
    std::fs::write(
        etc.0.join("resolv.conf"),
        "nameserver 198.51.100.1\nnameserver 198.51.100.2\n",
    )
    .unwrap();
    let bin = tests::daemon::spartan_bin();
    let run = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(["netns", "exec", &node.name])
            .arg(&bin)
            .args(args)
            .env_remove("RESOLVERS")
            .output()
            .unwrap()
    };
    let empty = write_config("");
    for args in [
        vec!["check-config", "--config", empty.to_str().unwrap()],
        vec![
            "run",
            "--config",
            empty.to_str().unwrap(),
            "--no-xdp",
            "--listen",
            "198.51.100.1",
        ],
    ] {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            err.contains("no usable upstream") && err.contains("RESOLVERS"),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(empty.parent().unwrap());
}

#[test]
fn root_shutdown_detaches_what_was_attached_whatever_a_reload_said() {
    let node = node();
    let pins = PinDir::new();
    let _r = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver");
    node.ip(&["link", "add", "vsa", "type", "veth", "peer", "name", "vsb"]);
    node.ip(&["link", "set", "vsa", "up"]);
    node.ip(&["link", "set", "vsb", "up"]);
    let text = |interfaces: &str| {
        format!(
            "listen_addresses = [\"198.51.100.1\"]\nupstream_resolvers = [\"127.0.0.1:5353\"]\n\
[xdp]\ninterfaces = [{interfaces}]\npin_dir = \"{}\"\ndetach_on_exit = true\n",
            pins.path().display()
        )
    };
    let config = write_config(&text("\"vsa\""));
    let mut s = Spartan::start(
        Some(&node),
        &["--config".into(), config.display().to_string()],
        server(),
    );
    let xdp_on = |dev: &str| {
        let out = node.ip(&["-d", "link", "show", "dev", dev]);
        String::from_utf8_lossy(&out.stdout).contains("xdp")
    };
    assert!(xdp_on("vsa") && xdp_on("lo"), "attached at start");
    // The reload drops the interface from the list (it needs a restart).
    std::fs::write(&config, text("")).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.stop().is_some_and(|st| st.success()), "{}", s.log_text());
    assert!(!xdp_on("vsa"), "the veth it attached is detached");
    assert!(!xdp_on("lo"), "lo is detached");
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
}

/// zk-1..zk-5 over UDP, as a client gets them (from the kernel when it
/// answers, else from the daemon).
fn udp_zk(node: &Netns) -> Vec<String> {
    (1..=5)
        .map(|i| {
            let out = client::dig(
                "dig",
                Some(node),
                server(),
                &["+short", &format!("zk-{i}.zk")],
            );
            client::short_lines(&out).join(",")
        })
        .collect()
}

fn kernel_args(pins: &PinDir, masters: &str) -> Vec<String> {
    tests::args(&[
        "--listen",
        "198.51.100.1",
        "--upstream",
        "127.0.0.1:5353",
        "--masters",
        masters,
        "--pin-dir",
        pins.path().to_str().unwrap(),
    ])
}

#[test]
fn root_a_second_daemon_fails_before_touching_the_kernel() {
    let node = node();
    let pins = PinDir::new();
    let first = Spartan::start(Some(&node), &kernel_args(&pins, "10.0.0.1"), server());
    let one = ["10.0.0.1"; 5];
    wait_zk(&node, pins.path(), &one, "first daemon");
    // A manual start while the service runs.
    let mut second = Spartan::spawn(Some(&node), &kernel_args(&pins, "10.0.0.9"));
    let status = second
        .wait_exit(Duration::from_secs(10))
        .expect("the second daemon exits by itself");
    assert!(!status.success());
    let log = second.log_text();
    assert!(
        log.contains(&format!("another Spartan (pid {})", first.pid())),
        "the error names the running daemon: {log}"
    );
    // Every path still gives the first daemon's answers.
    assert_eq!(kernel_zk(pins.path()), one, "kernel map");
    assert_eq!(udp_zk(&node), one, "UDP (kernel)");
    assert_eq!(daemon_zk(&node), one, "TCP (daemon)");
    let (status, body) = client::http_get(
        Some(&node),
        "127.0.0.1:62080".parse().unwrap(),
        "/v1/hosts/zk-1.zk",
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("10.0.0.1") && !body.contains("10.0.0.9"),
        "{body}"
    );
}

#[test]
fn root_a_daemon_without_the_kernel_path_detaches_what_an_earlier_one_left() {
    let node = node();
    let pins = PinDir::new();
    let mut first = Spartan::start(Some(&node), &kernel_args(&pins, "10.0.0.1"), server());
    wait_zk(&node, pins.path(), &["10.0.0.1"; 5], "first daemon");
    first.stop();
    // Left attached on purpose (no detach_on_exit): the kernel still answers.
    assert_eq!(udp_zk(&node), ["10.0.0.1"; 5], "kernel after the stop");
    drop(first);
    // Turned off: the next daemon detaches it, so UDP and TCP agree.
    let mut off = kernel_args(&pins, "10.0.0.2");
    off.push("--no-xdp".into());
    let second = Spartan::start(Some(&node), &off, server());
    assert_eq!(
        udp_zk(&node),
        ["10.0.0.2"; 5],
        "UDP answers are the daemon's"
    );
    assert_eq!(daemon_zk(&node), ["10.0.0.2"; 5]);
    assert!(
        second.log_text().contains("detached the XDP program"),
        "{}",
        second.log_text()
    );
    drop(second);
    // Another port: the program is loaded for it.
    let mut other_port = kernel_args(&pins, "10.0.0.3");
    other_port.extend(["--port".into(), "5300".into()]);
    let third = Spartan::start(
        Some(&node),
        &other_port,
        "198.51.100.1:5300".parse().unwrap(),
    );
    let log = third.log_text();
    assert!(
        log.contains("kernel path on") && log.contains("port=5300"),
        "{log}"
    );
}

#[test]
fn root_pinned_maps_of_another_layout_are_replaced() {
    let node = node();
    let pins = PinDir::new();
    std::fs::create_dir_all(pins.path()).unwrap();
    // What an older Spartan with another answer layout would have left.
    let stale = pins.path().join("SPARTAN_ANSWERS");
    tests::netns::sh(std::process::Command::new("bpftool").args([
        "map",
        "create",
        stale.to_str().unwrap(),
        "type",
        "hash",
        "key",
        "8",
        "value",
        "8",
        "entries",
        "16",
        "name",
        "SPARTAN_ANSWERS",
    ]));
    let s = Spartan::start(Some(&node), &kernel_args(&pins, "10.0.0.1"), server());
    assert!(s.log_text().contains("another layout"), "{}", s.log_text());
    wait_zk(
        &node,
        pins.path(),
        &["10.0.0.1"; 5],
        "over the replaced map",
    );
    assert_eq!(udp_zk(&node), ["10.0.0.1"; 5], "the kernel answers");
    assert!(s.log_text().contains("kernel path on"), "{}", s.log_text());
}

#[test]
fn root_down_removes_exactly_what_spartan_added() {
    // node() puts 198.51.100.1 on lo by hand, as an operator might.
    let node = node();
    let pins = PinDir::new();
    let down = || {
        let out = node
            .command(tests::daemon::spartan_bin().to_str().unwrap())
            .args(["down", "--pin-dir", pins.path().to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let addrs = || {
        String::from_utf8_lossy(&node.ip(&["-br", "addr", "show", "dev", "lo"]).stdout).to_string()
    };
    // Default listen addresses: .2 and .3 are Spartan's to add.
    let args = tests::args(&[
        "--upstream",
        "127.0.0.1:5353",
        "--pin-dir",
        pins.path().to_str().unwrap(),
    ]);
    let mut s = Spartan::start(Some(&node), &args, server());
    s.stop();
    let said = down();
    let now = addrs();
    assert!(
        now.contains("198.51.100.1/32"),
        "the hand-added address stays: {now}"
    );
    assert!(
        !now.contains("198.51.100.2") && !now.contains("198.51.100.3"),
        "{now}"
    );
    assert!(
        said.contains("removed: 198.51.100.2, 198.51.100.3 from lo"),
        "{said}"
    );
    assert!(said.contains("kept: 198.51.100.1"), "{said}");
    assert!(said.contains("removed: the XDP program from lo"), "{said}");
    // A run that was told to leave the addresses alone added none.
    let mut quiet = tests::args(&["--listen", "198.51.100.1", "--no-interface"]);
    quiet.extend(args.clone());
    let mut s = Spartan::start(Some(&node), &quiet, server());
    s.stop();
    let said = down();
    assert!(addrs().contains("198.51.100.1/32"), "{}", addrs());
    assert!(!said.contains("removed: 198.51.100"), "{said}");
    // Nothing left: a second down says so and removes nothing.
    let said = down();
    assert!(said.contains("attached nowhere"), "{said}");
    assert!(!said.contains("removed:"), "{said}");
}
