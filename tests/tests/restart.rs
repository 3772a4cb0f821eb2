//! Restarts that lose no query: the listen sockets are held across daemon
//! restarts as systemd's socket activation holds them (this test holds them
//! and passes them to each daemon exactly as systemd would), so queries
//! that arrive while no daemon runs wait in the sockets' queues.

use std::{
    net::{TcpListener, UdpSocket},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};
use tests::setup::server;

use hickory_proto::rr::RecordType;
use tests::{
    client::{query_message, tcp_connect, tcp_recv, tcp_send},
    daemon::Spartan,
    load::Load,
    netns::Netns,
    nsd::Nsd,
    pins::PinDir,
    require_root,
};

/// systemd's part: the listen sockets, bound in `node` and held by the
/// test across the daemon's restarts.
fn held_sockets(node: &Netns) -> (UdpSocket, TcpListener) {
    node.run(|| {
        (
            UdpSocket::bind("198.51.100.1:53").unwrap(),
            TcpListener::bind("198.51.100.1:53").unwrap(),
        )
    })
}

/// The daemon's arguments: the listen address already on `lo`, one
/// upstream, the test's pins, and `extra`.
fn daemon_args(pins: &PinDir, extra: &[&str]) -> Vec<String> {
    let mut args = tests::args(&[
        "--listen",
        "198.51.100.1",
        "--upstream",
        "127.0.0.1:5353",
        "--no-interface",
        "--pin-dir",
        pins.path().to_str().unwrap(),
    ]);
    args.extend(tests::args(extra));
    args
}

/// TCP queries on fresh connections until `stop`: (sent, failed, slowest).
fn tcp_stream(node: &Netns, stop: &AtomicBool) -> (u32, u32, Duration) {
    let (mut sent, mut failed, mut slowest) = (0, 0, Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        sent += 1;
        let started = Instant::now();
        let ok = tcp_connect(Some(node), server()).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            let q = query_message(sent as u16, "www.example.net.", RecordType::A)
                .to_vec()
                .unwrap();
            tcp_send(&mut s, &q)?;
            tcp_recv(&mut s)
        });
        if ok.is_err() {
            failed += 1;
        }
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    (sent, failed, slowest)
}

fn three_restarts(kernel: bool) {
    require_root();
    let node = Netns::new("rst");
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let _nsd = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "upstream");
    let pins = PinDir::new();
    let (udp, tcp) = held_sockets(&node);
    let fds = [udp.as_raw_fd(), tcp.as_raw_fd()];
    let args = daemon_args(&pins, if kernel { &[] } else { &["--no-xdp"] });
    let mut daemon = Spartan::start_activated(&node, &args, server(), &fds);
    assert!(
        daemon.log_text().contains("socket activation"),
        "{}",
        daemon.log_text()
    );
    let stop = AtomicBool::new(false);
    let (udp_tally, tcp_tally) = std::thread::scope(|scope| {
        // A steady stream over UDP, local and forwarded names, 200 a second.
        let udp_client = scope.spawn(|| {
            Load {
                source: "127.0.0.1".parse().unwrap(),
                server: server(),
                count: 1600,
                rate: 200,
                rtype: RecordType::A,
                linger: Duration::from_secs(4),
            }
            .run(&node, |i| {
                if i % 2 == 0 {
                    "ready.spartan."
                } else {
                    "www.example.net."
                }
                .to_string()
            })
        });
        let tcp_client = scope.spawn(|| tcp_stream(&node, &stop));
        std::thread::sleep(Duration::from_secs(1));
        for _ in 0..3 {
            daemon.stop();
            daemon = Spartan::start_activated(&node, &args, server(), &fds);
            std::thread::sleep(Duration::from_millis(800));
        }
        let udp_tally = udp_client.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        (udp_tally, tcp_client.join().unwrap())
    });
    let (tcp_sent, tcp_failed, tcp_slowest) = tcp_tally;
    eprintln!(
        "kernel path {kernel}: UDP {udp_tally:?}; TCP {tcp_sent} sent, {tcp_failed} failed, slowest {tcp_slowest:?}"
    );
    assert_eq!(
        (udp_tally.lost(), udp_tally.servfail),
        (0, 0),
        "UDP: {udp_tally:?}"
    );
    assert_eq!(tcp_failed, 0, "TCP: {tcp_failed} of {tcp_sent} failed");
}

#[test]
fn root_three_restarts_with_held_sockets_lose_nothing() {
    three_restarts(false);
}

#[test]
fn root_three_restarts_with_held_sockets_and_xdp_lose_nothing() {
    three_restarts(true);
}

#[test]
fn root_passed_sockets_that_do_not_match_the_listen_addresses_are_refused() {
    require_root();
    let node = Netns::new("rsm");
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let pins = PinDir::new();
    // Only UDP passed: TCP on the listen address is missing.
    let udp = node.run(|| UdpSocket::bind("198.51.100.1:53").unwrap());
    let args = daemon_args(&pins, &["--no-xdp"]);
    let mut daemon = Spartan::spawn_activated(&node, &args, &[udp.as_raw_fd()]);
    let status = daemon
        .wait_exit(Duration::from_secs(10))
        .expect("it refuses to start");
    assert!(!status.success());
    let log = daemon.log_text();
    assert!(
        log.contains("do not cover 198.51.100.1:53 over UDP and TCP")
            && log.contains("spartan.socket"),
        "{log}"
    );
}

#[test]
fn root_after_a_watchdog_kill_queries_wait_for_the_next_daemon() {
    require_root();
    let node = Netns::new("rsk");
    node.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
    let _nsd = Nsd::start(&node, "127.0.0.1:5353".parse().unwrap(), "upstream");
    let pins = PinDir::new();
    let (udp, tcp) = held_sockets(&node);
    let fds = [udp.as_raw_fd(), tcp.as_raw_fd()];
    let args = daemon_args(&pins, &["--no-xdp"]);
    let mut daemon = Spartan::start_activated(&node, &args, server(), &fds);
    // What the watchdog does: SIGKILL. Nothing answers now...
    daemon.kill();
    // ...and queries sent meanwhile wait in the held sockets.
    std::thread::scope(|scope| {
        let asked = scope.spawn(|| {
            Load {
                source: "127.0.0.1".parse().unwrap(),
                server: server(),
                count: 50,
                rate: 100,
                rtype: RecordType::A,
                linger: Duration::from_secs(3),
            }
            .run(&node, |_| "www.example.net.".to_string())
        });
        let tcp_asked = scope.spawn(|| {
            let mut s =
                tcp_connect(Some(&node), server()).expect("the connection waits in the backlog");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let q = query_message(1, "www.example.net.", RecordType::A)
                .to_vec()
                .unwrap();
            tcp_send(&mut s, &q).unwrap();
            tcp_recv(&mut s)
        });
        std::thread::sleep(Duration::from_millis(300));
        // systemd's Restart= brings the next daemon, with the same sockets.
        let _next = Spartan::start_activated(&node, &args, server(), &fds);
        let tally = asked.join().unwrap();
        assert_eq!((tally.answered, tally.noerror), (50, 50), "{tally:?}");
        assert!(
            tcp_asked.join().unwrap().is_ok(),
            "the TCP query waited and was answered"
        );
    });
}
