//! From query bytes to reply bytes.

use std::sync::Arc;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, LowerName},
};

use super::local;
use crate::{
    forward::Forwarder,
    local_data::LocalData,
    stats::{Outcome, Source, Stats},
};

/// The RCODE in a reply's header (the low four bits).
fn header_rcode(reply: &[u8]) -> u16 {
    reply.get(3).map_or(0, |b| (b & 0x0f) as u16)
}

/// How a query arrived; a TCP query is forwarded over TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What to do with one query.
pub enum Decision {
    /// Send this reply now.
    Reply(Vec<u8>),
    /// Stay silent.
    Drop,
    /// Forward the (parsed) query upstream.
    Forward(Box<Message>),
}

impl From<Option<Vec<u8>>> for Decision {
    fn from(reply: Option<Vec<u8>>) -> Self {
        reply.map_or(Decision::Drop, Decision::Reply)
    }
}

/// Answers one query: from the local zones, or through the forwarder.
pub struct Handler {
    local: Arc<LocalData>,
    forwarder: Arc<Forwarder>,
    stats: Arc<Stats>,
}

impl Handler {
    pub fn new(local: Arc<LocalData>, forwarder: Arc<Forwarder>, stats: Arc<Stats>) -> Self {
        Self {
            local,
            forwarder,
            stats,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The reply to `wire`, or `None` to stay silent (garbage, a response).
    pub async fn handle(&self, wire: &[u8], transport: Transport) -> Option<Vec<u8>> {
        match self.decide(wire, transport) {
            Decision::Reply(reply) => Some(reply),
            Decision::Drop => None,
            Decision::Forward(query) => {
                self.forwarding(transport, true);
                Some(self.forward(&query, wire, transport).await)
            }
        }
    }

    /// Forwards a query that [`Self::decide`] handed on.
    pub async fn forward(&self, query: &Message, wire: &[u8], transport: Transport) -> Vec<u8> {
        self.forwarder.forward(query, wire, transport).await
    }

    /// Everything that can be answered at once (local zones, errors) is
    /// answered here, without waiting; the rest is to be forwarded.
    pub fn decide(&self, wire: &[u8], transport: Transport) -> Decision {
        let tcp = transport == Transport::Tcp;
        let (decision, outcome, rcode) = self.decide_inner(wire, transport);
        let b = &self.stats.breakdown;
        // A query to forward is counted when it is forwarded, or dropped
        // for overload (see `forwarding`).
        if !matches!(decision, Decision::Forward(_)) {
            b.query(tcp, outcome);
        }
        if matches!(decision, Decision::Reply(_)) {
            b.answer(Source::Local, rcode);
        }
        decision
    }

    /// Counts a query that [`Self::decide`] handed on: forwarded, or
    /// dropped because every in-flight slot was taken.
    pub fn forwarding(&self, transport: Transport, accepted: bool) {
        let outcome = if accepted {
            Outcome::Forwarded
        } else {
            Outcome::Dropped
        };
        self.stats
            .breakdown
            .query(transport == Transport::Tcp, outcome);
    }

    /// The decision, how to count it, and the RCODE of a reply.
    fn decide_inner(&self, wire: &[u8], transport: Transport) -> (Decision, Outcome, u16) {
        let error = |r: Option<Vec<u8>>, rcode: u16| match r {
            Some(r) => (Decision::Reply(r), Outcome::Error, rcode),
            None => (Decision::Drop, Outcome::Dropped, 0),
        };
        let udp = transport == Transport::Udp;
        Stats::inc(if udp {
            &self.stats.queries_udp
        } else {
            &self.stats.queries_tcp
        });
        let query = match Message::from_vec(wire) {
            Ok(m) => m,
            Err(_) => {
                let reply = local::error_from_header(wire, ResponseCode::FormErr);
                Stats::inc(if reply.is_some() {
                    &self.stats.formerr
                } else {
                    &self.stats.dropped_garbage
                });
                return error(reply, 1);
            }
        };
        if query.message_type() != MessageType::Query {
            Stats::inc(&self.stats.dropped_garbage);
            return (Decision::Drop, Outcome::Dropped, 0);
        }
        if query.op_code() != OpCode::Query {
            Stats::inc(&self.stats.notimp);
            return error(
                local::encode(
                    &query,
                    local::response_to(&query, ResponseCode::NotImp),
                    udp,
                ),
                4,
            );
        }
        // RFC 9619: exactly one question.
        if query.queries().len() != 1 {
            Stats::inc(&self.stats.formerr);
            return error(
                local::encode(
                    &query,
                    local::response_to(&query, ResponseCode::FormErr),
                    udp,
                ),
                1,
            );
        }
        if query.extensions().as_ref().is_some_and(|e| e.version() > 0) {
            Stats::inc(&self.stats.badvers);
            return error(local::encode(&query, local::badvers(&query), udp), 16);
        }
        let question = &query.queries()[0];
        let name = LowerName::new(question.name());
        let zones = self.local.zones();
        if zones.zone_for(&name).is_some() {
            Stats::inc(&self.stats.answered_local);
            let reply = if question.query_class() != DNSClass::IN {
                local::response_to(&query, ResponseCode::Refused)
            } else {
                let answer = zones
                    .lookup(&name, question.query_type())
                    .expect("zone_for matched");
                local::local_answer(&query, answer)
            };
            return match local::encode(&query, reply, udp) {
                Some(r) => {
                    let rcode = header_rcode(&r);
                    (Decision::Reply(r), Outcome::Local, rcode)
                }
                None => (Decision::Drop, Outcome::Dropped, 0),
            };
        }
        (Decision::Forward(Box::new(query)), Outcome::Forwarded, 0)
    }
}
