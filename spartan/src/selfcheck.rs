//! The daemon's self-check through the daemon's own listeners: over UDP a
//! question the kernel never answers (`ready.spartan` TXT: the XDP program
//! answers only A questions of its map), so that a stalled UDP loop shows
//! even while the kernel still answers `ready.spartan` A; over TCP
//! `ready.spartan` A (only the daemon speaks TCP). It feeds `/healthz` and
//! the systemd watchdog.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use tokio::{
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use crate::{
    framing::{FrameReader, write_frame},
    zone::READY_ADDR,
};

/// The result of the latest checks.
#[derive(Debug, Default)]
pub struct Health {
    /// The latest check passed.
    pub ok: AtomicBool,
    /// A check has passed at least once.
    pub ever_ok: AtomicBool,
    pub passes: AtomicU64,
    pub failures: AtomicU64,
}

fn query(id: u16, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii("ready.spartan.").expect("static name"),
            rtype,
        ));
    m.to_vec().expect("static query encodes")
}

/// Exactly the answer watchdogs look for: A records, all 127.0.0.1.
fn is_ready_answer(reply: &[u8], id: u16) -> bool {
    Message::from_vec(reply).is_ok_and(|m| {
        m.id() == id
            && !m.answers().is_empty()
            && m.answers()
                .iter()
                .all(|r| matches!(r.data(), RData::A(a) if a.0 == READY_ADDR))
    })
}

/// The daemon's answer to `ready.spartan` TXT: authoritative NODATA with
/// the `spartan` SOA.
fn is_userspace_answer(reply: &[u8], id: u16) -> bool {
    Message::from_vec(reply).is_ok_and(|m| {
        m.id() == id
            && m.authoritative()
            && m.response_code() == ResponseCode::NoError
            && m.name_servers()
                .iter()
                .any(|r| r.record_type() == RecordType::SOA)
    })
}

/// `ready.spartan` A over UDP: what watchdogs ask (the kernel may answer).
pub async fn check_ready_udp(server: SocketAddr, wait: Duration) -> bool {
    udp_exchange(server, wait, RecordType::A, is_ready_answer).await
}

/// A UDP question only the daemon answers.
async fn check_udp_listener(server: SocketAddr, wait: Duration) -> bool {
    udp_exchange(server, wait, RecordType::TXT, is_userspace_answer).await
}

async fn udp_exchange(
    server: SocketAddr,
    wait: Duration,
    rtype: RecordType,
    good: fn(&[u8], u16) -> bool,
) -> bool {
    let attempt = async {
        let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
        let id = rand::random();
        socket.send_to(&query(id, rtype), server).await.ok()?;
        let mut buf = [0u8; 512];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.ok()?;
            if from == server && good(&buf[..len], id) {
                return Some(());
            }
        }
    };
    matches!(timeout(wait, attempt).await, Ok(Some(())))
}

async fn check_tcp(server: SocketAddr, wait: Duration) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(server).await.ok()?;
        let id = rand::random();
        write_frame(&mut stream, &query(id, RecordType::A))
            .await
            .ok()?;
        let reply = FrameReader::new().read(&mut stream).await.ok()??;
        is_ready_answer(&reply, id).then_some(())
    };
    matches!(timeout(wait, attempt).await, Ok(Some(())))
}

/// Which legs of one check passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckResult {
    pub udp: bool,
    pub tcp: bool,
}

impl CheckResult {
    pub fn ok(self) -> bool {
        self.udp && self.tcp
    }

    fn failing(self) -> &'static str {
        match (self.udp, self.tcp) {
            (false, false) => "UDP and TCP",
            (false, true) => "UDP",
            (true, false) => "TCP",
            (true, true) => "nothing",
        }
    }
}

/// One check of the daemon's UDP and TCP listeners.
pub async fn check(server: SocketAddr, wait: Duration) -> CheckResult {
    let (udp, tcp) = tokio::join!(check_udp_listener(server, wait), check_tcp(server, wait));
    CheckResult { udp, tcp }
}

/// Checks every `every`; calls `on_pass` after each passing check.
pub async fn check_periodically(
    server: SocketAddr,
    every: Duration,
    health: Arc<Health>,
    on_pass: impl Fn(),
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let result = check(server, Duration::from_secs(2).min(every)).await;
        let ok = result.ok();
        let was = health.ok.swap(ok, Ordering::Relaxed);
        if ok {
            health.passes.fetch_add(1, Ordering::Relaxed);
            health.ever_ok.store(true, Ordering::Relaxed);
            on_pass();
        } else {
            health.failures.fetch_add(1, Ordering::Relaxed);
        }
        if was != ok
            && health.passes.load(Ordering::Relaxed) + health.failures.load(Ordering::Relaxed) > 1
        {
            if ok {
                tracing::info!("self-check passes again");
            } else {
                tracing::warn!(%server, failing = result.failing(), "self-check failed: the daemon's listeners did not answer");
            }
        }
    }
}
