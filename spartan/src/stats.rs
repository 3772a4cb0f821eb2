//! The daemon's counters: plain atomics, read by `spartan stats` and the
//! metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Daemon-wide counters.
        #[derive(Debug, Default)]
        pub struct Stats {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A copy of [`Stats`] at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        pub struct StatsSnapshot {
            $(pub $name: u64,)*
        }

        impl Stats {
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

counters! {
    /// Queries received over UDP.
    queries_udp,
    /// Queries received over TCP.
    queries_tcp,
    /// Answered from the local zones.
    answered_local,
    /// Answered with an upstream's reply.
    answered_upstream,
    /// SERVFAILs Spartan made (all upstreams failed or none configured).
    servfail_generated,
    /// FORMERR replies (unparseable query, QDCOUNT other than 1).
    formerr,
    /// NOTIMP replies (opcode other than QUERY).
    notimp,
    /// BADVERS replies (EDNS version above 0).
    badvers,
    /// Datagrams dropped: not even a DNS header, or a response.
    dropped_garbage,
    /// UDP queries dropped because `max_in_flight` were in flight.
    dropped_overload,
    /// TCP connections refused because `max_tcp_connections` were open.
    tcp_refused,
    /// Upstream replies dropped: wrong source, ID or question.
    upstream_stray,
    /// Upstream exchanges that timed out.
    upstream_timeouts,
    /// Upstream exchanges that failed otherwise (network error, bad reply).
    upstream_errors,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
