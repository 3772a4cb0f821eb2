//! The response boundary: every reply, whoever made it, leaves through a
//! [`ResponseHandle`], which counts it once and delivers it over the
//! transport the query came in on.

use std::{net::SocketAddr, rc::Rc, sync::Arc};

use super::server::tcp::Connection;
use crate::{
    forward::Responder,
    message,
    stats::{ReplyOrigin, Stats},
    udp_batch::DnsSocket,
};

/// Replies the UDP servers may still owe to full send buffers, in all; past
/// that a reply is dropped and counted (the client retries).
const MAX_DEFERRED_UDP_SENDS: usize = 1024;

/// Where a reply goes.
pub enum Target {
    Udp {
        socket: Rc<DnsSocket>,
        peer: SocketAddr,
        deferred: Rc<std::cell::Cell<usize>>,
    },
    Tcp(Rc<Connection>),
}

/// Answers one query.
pub struct ResponseHandle {
    target: Target,
    stats: Arc<Stats>,
}

impl ResponseHandle {
    pub fn new(target: Target, stats: Arc<Stats>) -> Self {
        Self { target, stats }
    }

    fn tcp(&self) -> bool {
        matches!(self.target, Target::Tcp(_))
    }

    /// Counts `reply` and sends it.
    pub fn send(self, reply: Vec<u8>, origin: ReplyOrigin) {
        self.stats
            .replied(self.tcp(), origin, message::rcode(&reply));
        match self.target {
            Target::Udp {
                socket,
                peer,
                deferred,
            } => send_udp(socket, peer, reply, deferred, &self.stats),
            Target::Tcp(conn) => conn.push_reply(reply),
        }
    }

    /// Counts a query that gets no reply (its reason is counted where the
    /// decision was made).
    pub fn drop_query(self) {
        self.stats
            .breakdown
            .query(self.tcp(), crate::stats::Outcome::Dropped);
        if let Target::Tcp(conn) = self.target {
            conn.forget_query();
        }
    }
}

impl Responder for ResponseHandle {
    fn respond(self: Box<Self>, reply: Vec<u8>, origin: ReplyOrigin) {
        self.send(reply, origin)
    }

    fn drop_query(self: Box<Self>) {
        ResponseHandle::drop_query(*self)
    }
}

/// Sends at once; a full send buffer must not lose the reply nor stall the
/// receive loop, so the send then finishes in a task (bounded in number).
fn send_udp(
    socket: Rc<DnsSocket>,
    peer: SocketAddr,
    reply: Vec<u8>,
    deferred: Rc<std::cell::Cell<usize>>,
    stats: &Stats,
) {
    match socket.send_now(&reply, peer) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            if deferred.get() >= MAX_DEFERRED_UDP_SENDS {
                Stats::inc(&stats.dropped_overload);
                return;
            }
            deferred.set(deferred.get() + 1);
            tokio::task::spawn_local(async move {
                let _ = socket.send_retrying(&reply, peer).await;
                deferred.set(deferred.get() - 1);
            });
        }
        // Other errors (the client's port gone) leave nothing to do.
        _ => {}
    }
}
