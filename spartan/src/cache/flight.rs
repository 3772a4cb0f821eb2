//! Single-flight: while one query for a key is upstream, identical queries
//! wait for its answer instead of starting exchanges of their own. The
//! answer, once in, is stored, then rendered for each waiting client with
//! its own ID, question bytes and EDNS; when every upstream failed, an
//! expired answer is served instead (RFC 8767).

use std::{cell::RefCell, collections::HashMap, rc::Rc, sync::Arc};

use hickory_proto::op::{Message, ResponseCode};

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
    query: Box<Message>,
    response: Box<dyn Responder>,
}

impl Waiter {
    pub fn new(asked: Asked, query: Box<Message>, response: Box<dyn Responder>) -> Self {
        Self {
            asked,
            query,
            response,
        }
    }

    /// The flight this waiter belongs to, and a copy of its query (for the
    /// forwarder, when it leads).
    pub fn flight_and_query(&self) -> ((CacheKey, Transport), Box<Message>) {
        (
            (self.asked.key.clone(), self.asked.transport),
            self.query.clone(),
        )
    }

    fn send_answer(self, answer: &CachedAnswer, ttl: u32, origin: ReplyOrigin) {
        let reply = answer.render(&self.asked, ttl).unwrap_or_else(|| {
            let rcode = ResponseCode::from_low(answer.rcode());
            message::truncated(&self.query, rcode)
        });
        self.response.respond(reply, origin);
    }
}

/// Keys being fetched now, with the clients waiting for each.
#[derive(Default)]
pub struct Flights {
    waiting: RefCell<HashMap<(CacheKey, Transport), Vec<Waiter>>>,
}

impl Flights {
    /// Joins the flight for `waiter`'s key if there is one (and room); gives
    /// the waiter back otherwise.
    pub fn join(&self, waiter: Waiter) -> Result<(), Waiter> {
        let mut waiting = self.waiting.borrow_mut();
        let key = (waiter.asked.key.clone(), waiter.asked.transport);
        match waiting.get_mut(&key) {
            Some(list) if list.len() < MAX_WAITERS => {
                list.push(waiter);
                Ok(())
            }
            _ => Err(waiter),
        }
    }

    /// Starts a flight for `key` (its first query is the leader).
    pub fn start(&self, key: (CacheKey, Transport)) {
        self.waiting.borrow_mut().entry(key).or_default();
    }

    fn land(&self, key: &(CacheKey, Transport)) -> Vec<Waiter> {
        self.waiting.borrow_mut().remove(key).unwrap_or_default()
    }

    /// Flights under way.
    pub fn len(&self) -> usize {
        self.waiting.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The forwarder's answer to a flight's leader: stores it and answers
/// everyone waiting.
pub struct FlightLanding {
    pub leader: Waiter,
    pub mesos: bool,
    pub flights: Rc<Flights>,
    pub cache: Arc<AnswerCache>,
}

impl Responder for FlightLanding {
    fn respond(self: Box<Self>, reply: Vec<u8>, origin: ReplyOrigin) {
        let key = (self.leader.asked.key.clone(), self.leader.asked.transport);
        let waiters = self.flights.land(&key);
        let now = monotonic_ns();
        let rcode = message::rcode(&reply);
        let usable = origin == ReplyOrigin::Upstream
            && matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        let answer = if usable {
            self.cache
                .insert(&key.0, &reply, self.mesos, now)
                .ok()
                .map(|(answer, ttl)| (answer, ttl, ReplyOrigin::Upstream))
        } else {
            self.cache
                .stale(&key.0, now)
                .map(|answer| (answer, STALE_TTL, ReplyOrigin::Stale))
        };
        match answer {
            Some((answer, ttl, origin)) => {
                for w in std::iter::once(self.leader).chain(waiters) {
                    w.send_answer(&answer, ttl, origin);
                }
            }
            None => {
                // Not stored (TTL 0, TC, SERVFAIL without a stale answer):
                // the leader gets the reply as it is, the others the same
                // records under their own ID and question.
                let shared = CachedAnswer::from_reply(&reply, Ttls::Fixed).ok();
                for w in waiters {
                    match &shared {
                        Some(answer) => w.send_answer(answer, 0, origin),
                        None => w
                            .response
                            .respond(message::servfail(&w.query), ReplyOrigin::Generated),
                    }
                }
                self.leader.response.respond(reply, origin);
            }
        }
    }

    fn drop_query(self: Box<Self>) {
        let key = (self.leader.asked.key.clone(), self.leader.asked.transport);
        for w in self.flights.land(&key) {
            w.response.drop_query();
        }
        self.leader.response.drop_query();
    }
}
