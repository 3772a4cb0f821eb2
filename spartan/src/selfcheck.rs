//! The daemon's self-check: `ready.spartan` through the real path, over
//! UDP (answered by the kernel when the fast path is on) and over TCP (the
//! daemon itself). It feeds `/healthz` and the systemd watchdog.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RData, RecordType},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

use crate::zone::READY_ADDR;

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

fn query(id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii("ready.spartan.").expect("static name"),
            RecordType::A,
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

pub async fn check_udp(server: SocketAddr, wait: Duration) -> bool {
    let attempt = async {
        let socket = UdpSocket::bind("0.0.0.0:0").await.ok()?;
        let id = rand::random();
        socket.send_to(&query(id), server).await.ok()?;
        let mut buf = [0u8; 512];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.ok()?;
            if from == server && is_ready_answer(&buf[..len], id) {
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
        let q = query(id);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        stream.write_all(&framed).await.ok()?;
        let len = stream.read_u16().await.ok()? as usize;
        let mut reply = vec![0u8; len];
        stream.read_exact(&mut reply).await.ok()?;
        is_ready_answer(&reply, id).then_some(())
    };
    matches!(timeout(wait, attempt).await, Ok(Some(())))
}

/// One check, UDP and TCP; true when both answered 127.0.0.1.
pub async fn check(server: SocketAddr, wait: Duration) -> bool {
    let (udp, tcp) = tokio::join!(check_udp(server, wait), check_tcp(server, wait));
    udp && tcp
}

/// Checks every `every`; calls `on_pass` after each passing check.
pub async fn run(server: SocketAddr, every: Duration, health: Arc<Health>, on_pass: impl Fn()) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let ok = check(server, Duration::from_secs(2).min(every)).await;
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
                tracing::warn!(%server, "self-check failed: ready.spartan not answered over UDP and TCP");
            }
        }
    }
}
