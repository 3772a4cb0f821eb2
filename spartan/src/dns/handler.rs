//! The request handler: one query in, one reply out, now (local zones,
//! errors) or later (through the forwarder). The header is checked first
//! and errors are answered from it; the local zones are the only router
//! besides the forwarder.

use std::{net::IpAddr, rc::Rc, sync::Arc};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, LowerName, Name},
};

use super::{local, responder::ResponseHandle};
use crate::{
    cache::{AnswerCache, Asked, FlightKey, FlightLanding, Flights, Found, STALE_TTL, Waiter},
    fastpath::monotonic_ns,
    forward::Forwarder,
    local_answers::LocalAnswers,
    message::{self, Transport},
    stats::{DropReason, ReplyOrigin, Stats},
};

/// Answers queries: from the local zones, or through the forwarder.
pub struct RequestHandler {
    local: Arc<LocalAnswers>,
    forwarder: Rc<Forwarder>,
    stats: Arc<Stats>,
    cache: Arc<AnswerCache>,
    flights: Rc<Flights>,
    /// `mesos.`: answers under it get the shorter `mesos_max_ttl_s`.
    mesos: LowerName,
}

/// What one query comes to, before anything is sent.
enum Verdict {
    Reply(Vec<u8>, ReplyOrigin),
    Drop,
    Forward(Box<Message>),
}

impl RequestHandler {
    pub fn new(
        local: Arc<LocalAnswers>,
        forwarder: Rc<Forwarder>,
        stats: Arc<Stats>,
        cache: Arc<AnswerCache>,
    ) -> Self {
        Self {
            local,
            forwarder,
            stats,
            cache,
            flights: Rc::default(),
            mesos: LowerName::new(&Name::from_ascii("mesos.").expect("static name")),
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn forwarder(&self) -> &Rc<Forwarder> {
        &self.forwarder
    }

    /// Handles the query `wire` from `client`; the reply, if any, goes
    /// through `response`.
    pub fn handle(
        &self,
        wire: &[u8],
        transport: Transport,
        client: IpAddr,
        response: ResponseHandle,
    ) {
        Stats::inc(match transport {
            Transport::Udp => &self.stats.queries_udp,
            Transport::Tcp => &self.stats.queries_tcp,
        });
        match self.verdict(wire, transport) {
            Verdict::Reply(reply, origin) => response.send(reply, origin),
            Verdict::Drop => response.drop_query(),
            Verdict::Forward(query) => self.forward(query, wire, transport, client, response),
        }
    }

    /// A query for upstream: answered from the cache, joined to the same
    /// query already upstream, or sent as the leader of a new flight.
    fn forward(
        &self,
        query: Box<Message>,
        wire: &[u8],
        transport: Transport,
        client: IpAddr,
        response: ResponseHandle,
    ) {
        let asked = match self.cache.enabled() {
            true => Asked::new(wire, &query, transport),
            false => None,
        };
        let Some(asked) = asked else {
            return self
                .forwarder
                .forward(query, wire, transport, client, Box::new(response));
        };
        let now = monotonic_ns();
        let (answer, ttl, origin) = match self.cache.find(&asked.key, now) {
            Found::Fresh(answer, ttl) => (Some(answer), ttl, ReplyOrigin::Cache),
            Found::Stale(answer) => (Some(answer), STALE_TTL, ReplyOrigin::Stale),
            Found::Miss => (None, 0, ReplyOrigin::Cache),
        };
        if let Some(answer) = answer {
            let reply = answer.render(&asked, ttl).unwrap_or_else(|| {
                Stats::inc(&self.stats.truncated_for_client);
                message::truncated(&query, answer.rcode())
            });
            return response.send(reply, origin);
        }
        let flight: FlightKey = (asked.key.clone(), transport);
        if self.flights.stale_served(&flight)
            && let Some(answer) = self.cache.stale(&asked.key, now)
        {
            // This key's upstreams are slow right now: no need to wait.
            return Waiter::new(asked, Box::new(response)).send_answer(
                &answer,
                STALE_TTL,
                ReplyOrigin::Stale,
            );
        }
        Stats::inc(&self.stats.cache_misses);
        let waiter = Waiter::new(asked, Box::new(response));
        let leader = match self.flights.join(waiter) {
            Ok(()) => return Stats::inc(&self.stats.cache_flight_waits),
            Err(leader) => leader,
        };
        let key = leader.flight();
        let id = self.flights.start(key.clone(), leader);
        // An expired answer the upstreams may not refresh in time: the
        // clients get it when the timer runs out (RFC 8767 §5).
        if let Some(after) = self.cache.stale_answer_after()
            && self.cache.stale(&key.0, now).is_some()
        {
            let (flights, cache, key) = (self.flights.clone(), self.cache.clone(), key.clone());
            tokio::task::spawn_local(async move {
                tokio::time::sleep(after).await;
                if let Some(answer) = cache.stale(&key.0, monotonic_ns()) {
                    flights.serve_stale(&key, id, &answer);
                }
            });
        }
        let mesos = self
            .mesos
            .zone_of(&LowerName::new(query.queries()[0].name()));
        let landing = FlightLanding {
            key,
            mesos,
            flights: self.flights.clone(),
            cache: self.cache.clone(),
        };
        self.forwarder
            .forward(query, wire, transport, client, Box::new(landing));
    }

    fn verdict(&self, wire: &[u8], transport: Transport) -> Verdict {
        let udp = transport == Transport::Udp;
        let error = |reply: Option<Vec<u8>>| match reply {
            Some(r) => Verdict::Reply(r, ReplyOrigin::Error),
            None => Verdict::Drop,
        };
        let query = match Message::from_vec(wire) {
            Ok(m) => m,
            Err(_) => {
                let reply = local::error_from_header(wire, ResponseCode::FormErr);
                if reply.is_some() {
                    Stats::inc(&self.stats.formerr);
                } else {
                    self.stats.dropped(DropReason::Garbage);
                }
                return error(reply);
            }
        };
        if query.message_type() != MessageType::Query {
            self.stats.dropped(DropReason::Garbage);
            return Verdict::Drop;
        }
        if query.op_code() != OpCode::Query {
            Stats::inc(&self.stats.notimp);
            return error(local::encode(&query, local::notimp(&query), udp));
        }
        // RFC 9619: exactly one question.
        if query.queries().len() != 1 {
            Stats::inc(&self.stats.formerr);
            let reply = message::response_to(&query, ResponseCode::FormErr);
            return error(local::encode(&query, reply, udp));
        }
        if query.extensions().as_ref().is_some_and(|e| e.version() > 0) {
            Stats::inc(&self.stats.badvers);
            return error(local::encode(&query, local::badvers(&query), udp));
        }
        let question = &query.queries()[0];
        let name = LowerName::new(question.name());
        let zones = self.local.zones();
        if zones.zone_for(&name).is_none() {
            return Verdict::Forward(Box::new(query));
        }
        let (reply, origin) = if question.query_class() != DNSClass::IN {
            (
                message::response_to(&query, ResponseCode::Refused),
                ReplyOrigin::Error,
            )
        } else {
            let answer = zones
                .lookup(&name, question.query_type())
                .expect("zone_for matched");
            (local::local_answer(&query, answer), ReplyOrigin::Local)
        };
        match local::encode(&query, reply, udp) {
            Some(r) => Verdict::Reply(r, origin),
            None => Verdict::Drop,
        }
    }
}
