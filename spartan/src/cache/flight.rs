//! Single-flight: while one query for a key is upstream, identical queries
//! wait for its answer instead of starting exchanges of their own. The
//! answer, once in, is stored, then rendered for each waiting client with
//! its own ID, question bytes and EDNS; when every upstream failed, an
//! expired answer is served instead (RFC 8767).

use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc};

use hickory_proto::op::ResponseCode;

use super::{
    AnswerCache,
    answer::{CachedAnswer, Ttls},
    key::{Asked, CacheKey},
};
use crate::{
    fastpath::monotonic_ns,
    forward::Responder,
    message::{self, Transport},
    stats::ReplyOrigin,
};

/// TTL of a stale answer (RFC 8767 §4 suggests 30 s).
pub const STALE_TTL: u32 = 30;
/// Clients that may wait on one exchange; more go upstream on their own
/// (and meet the admission limits there).
const MAX_WAITERS: usize = 1024;

/// A client waiting for the answer.
pub struct Waiter {
    asked: Asked,
    response: Box<dyn Responder>,
}

impl Waiter {
    pub fn new(asked: Asked, response: Box<dyn Responder>) -> Self {
        Self { asked, response }
    }

    /// The flight this waiter belongs to.
    pub fn flight(&self) -> FlightKey {
        (self.asked.key.clone(), self.asked.transport)
    }

    /// A reply without records: header and question (and OPT) only.
    fn bare_reply(&self, rcode: ResponseCode) -> Vec<u8> {
        CachedAnswer::bare(rcode, false)
            .render(&self.asked, 0)
            .unwrap_or_default()
    }

    /// Answers with `answer`, its TTLs `ttl`.
    pub fn send_answer(self, answer: &CachedAnswer, ttl: u32, origin: ReplyOrigin) {
        let reply = answer.render(&self.asked, ttl).unwrap_or_else(|| {
            CachedAnswer::bare(answer.rcode(), true)
                .render(&self.asked, 0)
                .unwrap_or_default()
        });
        self.response.respond(reply, origin);
    }
}

/// A flight: the key of the query being fetched, and its transport (a TCP
/// query is forwarded over TCP).
pub type FlightKey = (CacheKey, Transport);

struct Flight {
    /// Tells this flight from a later one for the same key.
    id: u64,
    /// The first query; it gets the upstream's reply as it is when that is
    /// not stored (a TC, a SERVFAIL). `None` once answered stale.
    leader: Option<Waiter>,
    waiters: Vec<Waiter>,
    /// The upstreams were slow and the clients got the stale answer: later
    /// identical queries get it at once.
    stale_served: bool,
}

/// Keys being fetched now, with the clients waiting for each.
#[derive(Default)]
pub struct Flights {
    waiting: RefCell<HashMap<FlightKey, Flight, foldhash::quality::RandomState>>,
    next_id: std::cell::Cell<u64>,
}

impl Flights {
    /// Joins the flight for `waiter`'s key if there is one (and room); gives
    /// the waiter back otherwise.
    pub fn join(&self, waiter: Waiter) -> Result<(), Waiter> {
        let mut waiting = self.waiting.borrow_mut();
        let key = (waiter.asked.key.clone(), waiter.asked.transport);
        match waiting.get_mut(&key) {
            Some(flight) if !flight.stale_served && flight.waiters.len() < MAX_WAITERS => {
                flight.waiters.push(waiter);
                Ok(())
            }
            _ => Err(waiter),
        }
    }

    /// Whether the flight for `key` already answered its clients stale.
    pub fn stale_served(&self, key: &FlightKey) -> bool {
        self.waiting
            .borrow()
            .get(key)
            .is_some_and(|f| f.stale_served)
    }

    /// Starts a flight led by `leader`; its id.
    pub fn start(&self, key: FlightKey, leader: Waiter) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        self.waiting.borrow_mut().insert(
            key,
            Flight {
                id,
                leader: Some(leader),
                waiters: Vec::new(),
                stale_served: false,
            },
        );
        id
    }

    /// The client response timer (RFC 8767 §5) of flight `id` ran out:
    /// everyone waiting gets `answer`, stale; the exchange goes on and
    /// refreshes the cache when it ends.
    pub fn serve_stale(&self, key: &FlightKey, id: u64, answer: &CachedAnswer) {
        let (leader, waiters) = {
            let mut waiting = self.waiting.borrow_mut();
            let Some(flight) = waiting.get_mut(key).filter(|f| f.id == id) else {
                return;
            };
            flight.stale_served = true;
            (flight.leader.take(), std::mem::take(&mut flight.waiters))
        };
        for w in leader.into_iter().chain(waiters) {
            w.send_answer(answer, STALE_TTL, ReplyOrigin::Stale);
        }
    }

    fn land(&self, key: &FlightKey) -> Option<Flight> {
        self.waiting.borrow_mut().remove(key)
    }
}

/// The forwarder's answer to a flight's leader: stores it and answers
/// everyone still waiting.
pub struct FlightLanding {
    pub key: FlightKey,
    pub mesos: bool,
    pub flights: Rc<Flights>,
    pub cache: Arc<AnswerCache>,
}

impl Responder for FlightLanding {
    fn respond(self: Box<Self>, reply: Vec<u8>, origin: ReplyOrigin) {
        let Some(flight) = self.flights.land(&self.key) else {
            return;
        };
        let now = monotonic_ns();
        let rcode = message::rcode(&reply);
        let usable = origin == ReplyOrigin::Upstream
            && matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        let answer = if usable {
            self.cache
                .insert(&self.key.0, &reply, self.mesos, now)
                .ok()
                .map(|(answer, ttl)| (answer, ttl, ReplyOrigin::Upstream))
        } else {
            // Every upstream failed: stale answers for a while (RFC 8767).
            self.cache
                .refresh_failed(&self.key.0, now)
                .map(|answer| (answer, STALE_TTL, ReplyOrigin::Stale))
        };
        match answer {
            Some((answer, ttl, origin)) => {
                for w in flight.leader.into_iter().chain(flight.waiters) {
                    w.send_answer(&answer, ttl, origin);
                }
            }
            None => {
                // Not stored (TTL 0, TC, SERVFAIL without a stale answer):
                // the leader gets the reply as it is, the others the same
                // records under their own ID and question.
                let shared = match flight.waiters.is_empty() {
                    true => None,
                    false => CachedAnswer::from_reply(&reply, Ttls::Fixed).ok(),
                };
                for w in flight.waiters {
                    match &shared {
                        Some(answer) => w.send_answer(answer, 0, origin),
                        None => {
                            let reply = w.bare_reply(ResponseCode::ServFail);
                            w.response.respond(reply, ReplyOrigin::Generated)
                        }
                    }
                }
                if let Some(leader) = flight.leader {
                    leader.response.respond(reply, origin);
                }
            }
        }
    }

    fn drop_query(self: Box<Self>) {
        if let Some(flight) = self.flights.land(&self.key) {
            for w in flight.leader.into_iter().chain(flight.waiters) {
                w.response.drop_query();
            }
        }
    }
}
