//! From query bytes to reply bytes.

use std::sync::Arc;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, LowerName},
};

use super::local;
use crate::{forward::Forwarder, local_data::LocalData, stats::Stats};

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
            Decision::Forward(query) => Some(self.forward(&query, wire, transport).await),
        }
    }

    /// Forwards a query that [`Self::decide`] handed on.
    pub async fn forward(&self, query: &Message, wire: &[u8], transport: Transport) -> Vec<u8> {
        self.forwarder.forward(query, wire, transport).await
    }

    /// Everything that can be answered at once (local zones, errors) is
    /// answered here, without waiting; the rest is to be forwarded.
    pub fn decide(&self, wire: &[u8], transport: Transport) -> Decision {
        let reply = Decision::from;
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
                return Decision::from(reply);
            }
        };
        if query.message_type() != MessageType::Query {
            Stats::inc(&self.stats.dropped_garbage);
            return Decision::Drop;
        }
        if query.op_code() != OpCode::Query {
            Stats::inc(&self.stats.notimp);
            return reply(local::encode(
                &query,
                local::response_to(&query, ResponseCode::NotImp),
                udp,
            ));
        }
        // RFC 9619: exactly one question.
        if query.queries().len() != 1 {
            Stats::inc(&self.stats.formerr);
            return reply(local::encode(
                &query,
                local::response_to(&query, ResponseCode::FormErr),
                udp,
            ));
        }
        if query.extensions().as_ref().is_some_and(|e| e.version() > 0) {
            Stats::inc(&self.stats.badvers);
            return reply(local::encode(&query, local::badvers(&query), udp));
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
            return Decision::from(local::encode(&query, reply, udp));
        }
        Decision::Forward(Box::new(query))
    }
}
