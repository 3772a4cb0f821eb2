//! The racing forwarder: each query goes to two upstreams at once (all of
//! them when there are two or fewer) and the first usable answer wins.
//!
//! It runs on the DNS thread, without locks, tasks or channels per query:
//! a query is sent from one socket of a fixed [`pool`], its exchanges wait
//! in a table keyed by socket, upstream and ID, and the socket's receive
//! loop answers the client through its [`Responder`] as soon as a usable
//! reply comes in. Losing exchanges stay in the table until their reply or
//! their timeout, so that they still score their upstream; each upstream
//! may hold at most its share of them.

mod admission;
mod exchange;
pub mod pool;
mod router;
pub mod upstream;

use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    rc::Rc,
    sync::{Arc, atomic::Ordering},
};

use admission::Admission;
pub use admission::Limits;
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::LowerName,
};
pub use router::{Router, Routes};
use slab::Slab;
use tokio::{sync::Notify, time::Instant};
use upstream::{Outcome, Upstream, UpstreamSet};

use crate::{
    message::{self, Transport},
    stats::{DropReason, ReplyOrigin, Stats},
    udp_batch::{DnsSocket, RecvBatch},
};

/// Answers one client: implemented by the front end.
pub trait Responder {
    /// Sends `reply` to the client.
    fn respond(self: Box<Self>, reply: Vec<u8>, origin: ReplyOrigin);
    /// Gives the query up without a reply.
    fn drop_query(self: Box<Self>);
}

/// Datagrams one receive call takes, and the largest reply kept whole: a
/// longer one is answered with TC (a UDP client takes at most 4096 bytes
/// in practice; RFC 9715 suggests 1232).
const REPLY_BATCH: usize = 16;
const REPLY_SLOT: usize = 4096;
/// The socket id of TCP exchanges (each has its own connection).
const TCP: u32 = 0;
/// Exchanges time out in batches this far apart: one timer wake ends all
/// that are due (and skips the many already answered), instead of one wake
/// per exchange. A timeout may end up to this much late.
const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ExchangeKey {
    socket: u32,
    upstream: SocketAddr,
    id: u16,
}

struct Exchange {
    query: usize,
    upstream: Arc<Upstream>,
    sent: Instant,
    /// Tells this exchange from an earlier one with the same key.
    seq: u64,
}

/// An exchange ready to go: its query bytes carry the exchange's own ID.
struct Prepared {
    upstream: Arc<Upstream>,
    /// `None` for TCP.
    socket: Option<Rc<DnsSocket>>,
    key: ExchangeKey,
    wire: Vec<u8>,
}

/// A forwarded query until its last exchange ended.
struct Pending {
    query: Box<Message>,
    transport: Transport,
    client: IpAddr,
    /// Taken when the client is answered.
    responder: Option<Box<dyn Responder>>,
    set: Arc<UpstreamSet>,
    exchanges_left: usize,
    /// A reply that is not usable (SERVFAIL, REFUSED...), kept in case no
    /// usable one comes.
    fallback: Option<Vec<u8>>,
}

/// How an exchange ended.
enum End<'a> {
    Reply { wire: &'a [u8], cut: bool },
    NoReply,
    Error,
}

#[derive(Default)]
struct Table {
    queries: Slab<Pending>,
    exchanges: HashMap<ExchangeKey, Exchange, foldhash::quality::RandomState>,
    /// Deadlines in the order exchanges were sent: with one upstream
    /// timeout for all, that is deadline order. (After a reload shortens
    /// the timeout, newer exchanges wait behind older ones, at most one old
    /// timeout.)
    deadlines: VecDeque<(Instant, u64, ExchangeKey)>,
    seq: u64,
}

pub struct Forwarder {
    router: Arc<Router>,
    stats: Arc<Stats>,
    admission: RefCell<Admission>,
    table: RefCell<Table>,
    pool: RefCell<pool::Pool>,
    /// Wakes the expiry loop when the first deadline comes into an empty
    /// queue.
    first_deadline: Notify,
    me: std::rc::Weak<Forwarder>,
}

impl Forwarder {
    /// Must be called on the DNS thread, inside its `LocalSet`.
    pub fn new(router: Arc<Router>, stats: Arc<Stats>, limits: Limits) -> Rc<Self> {
        let forwarder = Rc::new_cyclic(|me| Self {
            router,
            stats,
            admission: RefCell::new(Admission::new(limits)),
            table: RefCell::default(),
            pool: RefCell::default(),
            first_deadline: Notify::new(),
            me: me.clone(),
        });
        tokio::task::spawn_local(expire_loop(forwarder.clone()));
        forwarder
    }

    /// Queries whose client has not been answered yet.
    pub fn in_flight(&self) -> usize {
        self.admission.borrow().in_flight()
    }

    /// Forwards `query` (whose bytes are `wire`) for `client`; the answer
    /// goes to `responder`, now or later.
    pub fn forward(
        &self,
        query: Box<Message>,
        wire: &[u8],
        transport: Transport,
        client: IpAddr,
        responder: Box<dyn Responder>,
    ) {
        let routes = self.router.routes();
        let set = self
            .router
            .route(&routes, &LowerName::new(query.queries()[0].name()));
        if set.upstreams.is_empty() {
            set.failures.fetch_add(1, Ordering::Relaxed);
            return responder.respond(message::servfail(&query), ReplyOrigin::Generated);
        }
        if let Err(reason) = self.admission.borrow_mut().admit(client) {
            return self.refuse(&query, transport, responder, reason);
        }
        let per_upstream = self.admission.borrow().limits().per_upstream as u64;
        let chosen: Vec<Arc<Upstream>> = set
            .pick()
            .into_iter()
            .filter(|u| u.outstanding.load(Ordering::Relaxed) < per_upstream)
            .collect();
        if chosen.is_empty() {
            self.admission.borrow_mut().release(client);
            return self.refuse(&query, transport, responder, DropReason::UpstreamShare);
        }
        self.publish_in_flight();
        let now = Instant::now();
        let deadline = now + routes.upstream_timeout;
        let mut table = self.table.borrow_mut();
        let key = table.queries.insert(Pending {
            query,
            transport,
            client,
            responder: Some(responder),
            set,
            exchanges_left: 0,
            fallback: None,
        });
        let slot = rand::random::<u32>() as usize;
        let mut prepared: Vec<Prepared> = Vec::with_capacity(chosen.len());
        for upstream in chosen {
            let socket = match transport {
                Transport::Udp => match self.pool_socket(slot, &upstream, &routes) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::debug!(error = %e, "no upstream socket");
                        Self::fail_to_send(&self.stats, &upstream);
                        continue;
                    }
                },
                Transport::Tcp => None,
            };
            let socket_id = socket.as_ref().map_or(TCP, |(id, _)| *id);
            let taken = |k: &ExchangeKey| {
                table.exchanges.contains_key(k) || prepared.iter().any(|p| p.key == *k)
            };
            let Some(ex_key) = unused_key(socket_id, upstream.addr, taken) else {
                Self::fail_to_send(&self.stats, &upstream);
                continue;
            };
            let mut out = wire.to_vec();
            message::set_id(&mut out, ex_key.id);
            prepared.push(Prepared {
                upstream,
                socket: socket.map(|(_, s)| s),
                key: ex_key,
                wire: out,
            });
        }
        let sent = self.send_udp(&prepared);
        for (p, sent) in prepared.into_iter().zip(sent) {
            if !sent {
                Self::fail_to_send(&self.stats, &p.upstream);
                continue;
            }
            let seq = self.register(&mut table, key, &p, now, deadline);
            if transport == Transport::Tcp {
                let me = self.me.upgrade().expect("forwarder alive");
                tokio::task::spawn_local(async move {
                    let result = exchange::tcp(p.key.upstream, &p.wire, deadline).await;
                    me.on_tcp_result(p.key, seq, result);
                });
            }
        }
        if table.queries[key].exchanges_left == 0 {
            // Nothing could be sent at all.
            self.finish(&mut table, key);
        }
    }

    /// The pool socket of `slot` for `upstream`'s family; a new socket gets
    /// its receive loop.
    fn pool_socket(
        &self,
        slot: usize,
        upstream: &Upstream,
        routes: &Routes,
    ) -> std::io::Result<(u32, Rc<DnsSocket>)> {
        self.pool
            .borrow_mut()
            .socket(slot, &upstream.addr, routes.upstream_timeout, |s| {
                let me = self.me.upgrade().expect("forwarder alive");
                tokio::task::spawn_local(receive_loop(
                    me,
                    s.id,
                    s.socket.clone(),
                    s.retirement.clone(),
                ));
            })
    }

    /// Sends the UDP exchanges, those on one socket in one `sendmmsg` (all
    /// of a query's exchanges share a socket unless their families differ).
    /// Which of `prepared` are on their way: TCP ones always (their task
    /// sends them).
    fn send_udp(&self, prepared: &[Prepared]) -> Vec<bool> {
        let mut sent = vec![true; prepared.len()];
        let mut start = 0;
        while start < prepared.len() {
            let Some(socket) = &prepared[start].socket else {
                start += 1;
                continue;
            };
            let same = prepared[start..]
                .iter()
                .take_while(|p| p.key.socket == prepared[start].key.socket)
                .count();
            let batch: Vec<(&[u8], SocketAddr)> = prepared[start..start + same]
                .iter()
                .map(|p| (p.wire.as_slice(), p.key.upstream))
                .collect();
            let n = match socket.send_batch(&batch) {
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream send failed");
                    0
                }
            };
            for s in &mut sent[start + n..start + same] {
                *s = false;
            }
            start += same;
        }
        sent
    }

    /// Enters a sent exchange in the table, with its deadline: its sequence
    /// number.
    fn register(
        &self,
        table: &mut Table,
        query: usize,
        p: &Prepared,
        now: Instant,
        deadline: Instant,
    ) -> u64 {
        table.seq += 1;
        let seq = table.seq;
        p.upstream.outstanding.fetch_add(1, Ordering::Relaxed);
        table.exchanges.insert(
            p.key,
            Exchange {
                query,
                upstream: p.upstream.clone(),
                sent: now,
                seq,
            },
        );
        let first = table.deadlines.is_empty();
        table.deadlines.push_back((deadline, seq, p.key));
        if first {
            self.first_deadline.notify_one();
        }
        table.queries[query].exchanges_left += 1;
        seq
    }

    fn fail_to_send(stats: &Stats, upstream: &Upstream) {
        Stats::inc(&stats.upstream_errors);
        upstream.record(Outcome::Error, std::time::Duration::ZERO);
    }

    /// A query over a limit: UDP stays silent (a flooding client gets no
    /// work done for it); TCP gets a SERVFAIL, so that the connection's
    /// pipeline moves on.
    fn refuse(
        &self,
        query: &Message,
        transport: Transport,
        responder: Box<dyn Responder>,
        reason: DropReason,
    ) {
        self.stats.dropped(reason);
        match transport {
            Transport::Udp => responder.drop_query(),
            Transport::Tcp => responder.respond(message::servfail(query), ReplyOrigin::Generated),
        }
    }

    fn publish_in_flight(&self) {
        let n = self.admission.borrow().in_flight();
        self.stats.in_flight.store(n as u64, Ordering::Relaxed);
    }

    /// A datagram on pool socket `socket` from `from`.
    fn on_udp_reply(&self, socket: u32, from: SocketAddr, wire: &[u8], cut: bool) {
        let Some(header) = message::header(wire) else {
            Stats::inc(&self.stats.upstream_stray);
            return;
        };
        let key = ExchangeKey {
            socket,
            upstream: from,
            id: header.id(),
        };
        let mut table = self.table.borrow_mut();
        let ours = table.exchanges.get(&key).is_some_and(|ex| {
            let question = &table.queries[ex.query].query.queries()[0];
            exchange::matches(wire, &header, key.id, question)
        });
        if !ours {
            // Spoofed, late (after its timeout) or garbage: the exchange,
            // if any, keeps waiting for the real reply.
            Stats::inc(&self.stats.upstream_stray);
            return;
        }
        let ex = table.exchanges.remove(&key).expect("checked");
        self.end(&mut table, ex, End::Reply { wire, cut });
    }

    fn on_tcp_result(
        &self,
        key: ExchangeKey,
        seq: u64,
        result: Result<Vec<u8>, exchange::ExchangeError>,
    ) {
        let mut table = self.table.borrow_mut();
        if table.exchanges.get(&key).is_none_or(|ex| ex.seq != seq) {
            return; // Already expired.
        }
        let ex = table.exchanges.remove(&key).expect("checked");
        match result {
            Ok(wire) => {
                let question = &table.queries[ex.query].query.queries()[0];
                let ours = message::header(&wire)
                    .is_some_and(|h| exchange::matches(&wire, &h, key.id, question));
                if ours {
                    self.end(
                        &mut table,
                        ex,
                        End::Reply {
                            wire: &wire,
                            cut: false,
                        },
                    );
                } else {
                    Stats::inc(&self.stats.upstream_stray);
                    Stats::inc(&self.stats.upstream_errors);
                    self.end(&mut table, ex, End::Error);
                }
            }
            Err(exchange::ExchangeError::Timeout) => {
                Stats::inc(&self.stats.upstream_timeouts);
                self.end(&mut table, ex, End::NoReply);
            }
            Err(_) => {
                Stats::inc(&self.stats.upstream_errors);
                self.end(&mut table, ex, End::Error);
            }
        }
    }

    /// Ends every exchange whose deadline has passed.
    fn expire(&self, now: Instant) {
        let mut table = self.table.borrow_mut();
        while let Some((at, seq, key)) = table.deadlines.front().copied() {
            if at > now {
                break;
            }
            table.deadlines.pop_front();
            if table.exchanges.get(&key).is_some_and(|ex| ex.seq == seq) {
                let ex = table.exchanges.remove(&key).expect("checked");
                Stats::inc(&self.stats.upstream_timeouts);
                self.end(&mut table, ex, End::NoReply);
            }
        }
    }

    /// One exchange ended: score its upstream, answer the client when the
    /// reply is usable, and finish the query after its last exchange.
    fn end(&self, table: &mut Table, ex: Exchange, end: End<'_>) {
        ex.upstream.outstanding.fetch_sub(1, Ordering::Relaxed);
        let outcome = match &end {
            End::Reply { wire, .. } => match message::rcode(wire) {
                ResponseCode::NoError | ResponseCode::NXDomain => Outcome::Usable,
                _ => Outcome::Failed,
            },
            End::NoReply => Outcome::NoReply,
            End::Error => Outcome::Error,
        };
        ex.upstream.record(outcome, ex.sent.elapsed());
        let pending = &mut table.queries[ex.query];
        pending.exchanges_left -= 1;
        if let End::Reply { wire, cut } = end {
            let reply = self.reply_for_client(pending, wire, cut);
            if outcome == Outcome::Usable {
                if let Some(responder) = pending.responder.take() {
                    self.admission.borrow_mut().release(pending.client);
                    self.publish_in_flight();
                    responder.respond(reply, ReplyOrigin::Upstream);
                }
            } else if pending.fallback.is_none() {
                pending.fallback = Some(reply);
            }
        }
        if pending.exchanges_left == 0 {
            self.finish(table, ex.query);
        }
    }

    /// The upstream's reply as the client gets it: the client's ID, and cut
    /// to TC when it is larger than the client takes over UDP.
    fn reply_for_client(&self, pending: &Pending, wire: &[u8], cut: bool) -> Vec<u8> {
        let too_big = pending.transport == Transport::Udp
            && (cut || wire.len() > message::max_udp_reply(&pending.query));
        if too_big {
            Stats::inc(&self.stats.truncated_for_client);
            return message::truncated(&pending.query, message::rcode(wire));
        }
        let mut reply = wire.to_vec();
        message::set_id(&mut reply, pending.query.id());
        reply
    }

    /// The last exchange of query `key` ended: a client still waiting gets
    /// an upstream's unusable reply or a SERVFAIL we make.
    fn finish(&self, table: &mut Table, key: usize) {
        let pending = table.queries.remove(key);
        let Some(responder) = pending.responder else {
            return;
        };
        self.admission.borrow_mut().release(pending.client);
        self.publish_in_flight();
        pending.set.failures.fetch_add(1, Ordering::Relaxed);
        match pending.fallback {
            Some(reply) => responder.respond(reply, ReplyOrigin::Upstream),
            None => responder.respond(message::servfail(&pending.query), ReplyOrigin::Generated),
        }
    }
}

/// A fresh random ID for an exchange with `upstream` on `socket`, not
/// `taken` (a few tries; with 65,536 IDs and a bounded table they suffice).
fn unused_key(
    socket: u32,
    upstream: SocketAddr,
    taken: impl Fn(&ExchangeKey) -> bool,
) -> Option<ExchangeKey> {
    (0..16).find_map(|_| {
        let key = ExchangeKey {
            socket,
            upstream,
            id: rand::random(),
        };
        (!taken(&key)).then_some(key)
    })
}

/// Receives the replies on one pool socket until it is retired.
async fn receive_loop(
    forwarder: Rc<Forwarder>,
    id: u32,
    socket: Rc<DnsSocket>,
    retirement: Rc<pool::Retirement>,
) {
    let mut batch = RecvBatch::new(REPLY_BATCH, REPLY_SLOT);
    loop {
        tokio::select! {
            received = batch.recv(&socket) => match received {
                Ok(n) => {
                    for i in 0..n {
                        if let Some(d) = batch.get(i) {
                            forwarder.on_udp_reply(id, d.from, d.data, d.truncated);
                        }
                    }
                }
                // ICMP errors from earlier sends surface here; keep going.
                Err(e) => tracing::debug!(error = %e, "upstream receive error"),
            },
            _ = retirement.wait() => return,
        }
    }
}

/// Times out exchanges at their deadlines.
async fn expire_loop(forwarder: Rc<Forwarder>) {
    loop {
        let next = forwarder
            .table
            .borrow()
            .deadlines
            .front()
            .map(|(t, _, _)| *t);
        let earlier = forwarder.first_deadline.notified();
        match next {
            None => earlier.await,
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at + EXPIRY_TICK) => forwarder.expire(Instant::now()),
                    _ = earlier => {}
                }
            }
        }
    }
}
