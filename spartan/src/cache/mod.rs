//! The answer cache in front of the forwarder.
//!
//! Keyed on the lower-cased name, type, class, DO and CD ([`key`]); an
//! answer keeps everything but what comes from the query ([`answer`]);
//! TTLs follow the upstream's, capped ([`policy`]); the store is an LRU
//! bounded in entries and bytes whose entries are mirrored into the
//! kernel's answers map ([`store`]); identical misses share one upstream
//! exchange, and expired answers stand in when every upstream fails
//! ([`flight`]).

pub mod answer;
pub mod flight;
pub mod key;
pub mod policy;
pub mod store;

pub use answer::{CachedAnswer, Ttls};
pub use flight::{FlightKey, FlightLanding, Flights, STALE_TTL, Waiter};
pub use key::{Asked, CacheKey};
pub use store::{AnswerCache, EntryView, Found};
