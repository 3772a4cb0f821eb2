//! The ZooKeeper names as the daemon, the kernel and a client see them.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::Message,
    rr::{RData, RecordType},
};
use spartan::{fastpath::KernelMaps, zone};

use crate::{
    client::{self, query_message, tcp_connect, tcp_recv, tcp_send},
    netns::Netns,
    setup::server,
};

/// zk-1..zk-5 as the daemon answers them (over TCP: userspace, not XDP).
pub fn daemon_zk(node: &Netns) -> Vec<String> {
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
pub fn kernel_zk(pins: &Path) -> Vec<String> {
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
pub fn wait_zk(node: &Netns, pins: &Path, want: &[&str], what: &str) {
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
pub fn stays_zk(node: &Netns, pins: &Path, want: &[&str], what: &str) {
    for _ in 0..8 {
        assert_eq!(daemon_zk(node), want, "{what}: daemon");
        assert_eq!(kernel_zk(pins), want, "{what}: kernel");
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// zk-1..zk-5 over UDP, as a client gets them (from the kernel when it
/// answers, else from the daemon).
pub fn udp_zk(node: &Netns) -> Vec<String> {
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
