//! The daemon's life on a node: the listen addresses, restarts, reloads,
//! a missing upstream, shutdown and `spartan down`, a second daemon, pinned
//! maps of another layout.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{op::Message, rr::RecordType};
use tests::{
    ClientNode,
    client::{self, query_message},
    daemon::Spartan,
    netns::{Netns, sh},
    nsd::Nsd,
    pins::PinDir,
    require_root,
    setup::{TempConfig, server, spartan_node},
    zk::{daemon_zk, kernel_zk, udp_zk, wait_zk},
};

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
    let node = spartan_node("spm");
    let _r1 = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "resolver-1");
    let _r2 = Nsd::start(&node, "127.0.0.2:5353".parse().unwrap(), "resolver-2");
    let config = TempConfig::new(
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
}

#[test]
fn root_without_a_usable_upstream_check_config_and_run_name_the_fix() {
    let node = spartan_node("spm");
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
    let empty = TempConfig::new("");
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
}

#[test]
fn root_shutdown_detaches_what_was_attached_whatever_a_reload_said() {
    let node = spartan_node("spm");
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
    let config = TempConfig::new(&text("\"vsa\""));
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
    let node = spartan_node("spm");
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
    let node = spartan_node("spm");
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
    let node = spartan_node("spm");
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
    // spartan_node("spm") puts 198.51.100.1 on lo by hand, as an operator might.
    let node = spartan_node("spm");
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
