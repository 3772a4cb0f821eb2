//! One query to one upstream, over UDP or TCP, from a fresh socket with a
//! fresh random ID. A reply counts only when its source, ID and question
//! match what was sent; anything else is a stray, counted and ignored.

use std::{io, net::SocketAddr};

use hickory_proto::op::{Message, Query};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::{Instant, timeout_at},
};

use crate::stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no reply within the timeout")]
    Timeout,
    #[error("network error: {0}")]
    Io(#[from] io::Error),
    #[error("malformed reply")]
    Malformed,
}

fn unspecified_for(addr: &SocketAddr) -> SocketAddr {
    if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    }
}

/// `wire` with its ID replaced.
pub fn with_id(wire: &[u8], id: u16) -> Vec<u8> {
    let mut out = wire.to_vec();
    out[..2].copy_from_slice(&id.to_be_bytes());
    out
}

/// Does `reply` answer the query with `id` and `question`?
fn matches(reply: &[u8], id: u16, question: &Query) -> bool {
    if reply.len() < 12 || u16::from_be_bytes([reply[0], reply[1]]) != id || reply[2] & 0x80 == 0 {
        return false;
    }
    match Message::from_vec(reply) {
        // A truncated reply may carry no question at all; the ID matched.
        Ok(m) if m.queries().is_empty() => m.truncated(),
        Ok(m) => {
            let q = &m.queries()[0];
            q.name() == question.name()
                && q.query_type() == question.query_type()
                && q.query_class() == question.query_class()
        }
        Err(_) => false,
    }
}

/// The largest UDP reply a query allows: its EDNS UDP size, at least 512.
pub fn max_udp_reply(query: &Message) -> usize {
    query
        .extensions()
        .as_ref()
        .map_or(512, |e| e.max_payload() as usize)
        .clamp(512, 65_535)
}

/// Sends `wire` (the client's query) with a fresh ID to `upstream` over UDP
/// and waits until `deadline` for a matching reply.
pub async fn udp(
    upstream: SocketAddr,
    wire: &[u8],
    question: &Query,
    max_reply: usize,
    deadline: Instant,
    stats: &Stats,
) -> Result<Vec<u8>, ExchangeError> {
    let id: u16 = rand::random();
    // Port 0: the kernel picks a random ephemeral port for every socket.
    let socket = UdpSocket::bind(unspecified_for(&upstream)).await?;
    socket.send_to(&with_id(wire, id), upstream).await?;
    // Room for the largest reply the client said it accepts (the upstream
    // sizes its reply by the same EDNS field, which passes through).
    let mut buf = vec![0u8; max_reply];
    loop {
        let (len, from) = match timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Err(_) => return Err(ExchangeError::Timeout),
            Ok(r) => r?,
        };
        let reply = &buf[..len];
        if from != upstream || !matches(reply, id, question) {
            Stats::inc(&stats.upstream_stray);
            continue;
        }
        return Ok(reply.to_vec());
    }
}

/// The same over TCP: one connection, one length-prefixed query and reply.
pub async fn tcp(
    upstream: SocketAddr,
    wire: &[u8],
    question: &Query,
    deadline: Instant,
    stats: &Stats,
) -> Result<Vec<u8>, ExchangeError> {
    let id: u16 = rand::random();
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        stream.set_nodelay(true)?;
        let query = with_id(wire, id);
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&(query.len() as u16).to_be_bytes());
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await?;
        let len = stream.read_u16().await? as usize;
        let mut reply = vec![0u8; len];
        stream.read_exact(&mut reply).await?;
        Ok::<_, io::Error>(reply)
    };
    let reply = match timeout_at(deadline, exchange).await {
        Err(_) => return Err(ExchangeError::Timeout),
        Ok(r) => r?,
    };
    if !matches(&reply, id, question) {
        Stats::inc(&stats.upstream_stray);
        return Err(ExchangeError::Malformed);
    }
    Ok(reply)
}
