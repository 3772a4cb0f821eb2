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
            /// Queries by protocol and outcome, answers by source and rcode.
            pub breakdown: Breakdown,
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

/// Who produced an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The local zones (and error replies Spartan makes for bad queries).
    Local = 0,
    /// An upstream's reply, relayed.
    Upstream = 1,
    /// A SERVFAIL Spartan made because every upstream failed.
    Generated = 2,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Local, Source::Upstream, Source::Generated];
    pub fn name(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Upstream => "upstream",
            Source::Generated => "generated",
        }
    }
}

/// What became of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered from the local zones.
    Local = 0,
    /// Forwarded upstream.
    Forwarded = 1,
    /// Answered with an error (FORMERR, NOTIMP, BADVERS, REFUSED).
    Error = 2,
    /// Dropped: garbage, a response, or overload.
    Dropped = 3,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Local,
        Outcome::Forwarded,
        Outcome::Error,
        Outcome::Dropped,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Local => "local",
            Outcome::Forwarded => "forwarded",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
        }
    }
}

/// RCODEs tracked per answer source (0..=23 covers every assigned one that
/// fits a reply header plus the EDNS-extended ones Spartan sends).
pub const RCODES: usize = 24;

/// Queries by protocol and outcome; answers by source and rcode.
#[derive(Debug)]
pub struct Breakdown {
    /// [udp, tcp][outcome]
    queries: [[AtomicU64; 4]; 2],
    /// [source][rcode]
    answers: [[AtomicU64; RCODES]; 3],
}

impl Default for Breakdown {
    fn default() -> Self {
        Self {
            queries: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            answers: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl Breakdown {
    pub fn query(&self, tcp: bool, outcome: Outcome) {
        self.queries[tcp as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn answer(&self, source: Source, rcode: u16) {
        let rcode = (rcode as usize).min(RCODES - 1);
        self.answers[source as usize][rcode].fetch_add(1, Ordering::Relaxed);
    }

    /// (protocol, outcome, count) for every non-zero pair.
    pub fn queries(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (p, proto) in ["udp", "tcp"].iter().enumerate() {
            for o in Outcome::ALL {
                let v = self.queries[p][o as usize].load(Ordering::Relaxed);
                out.push((*proto, o.name(), v));
            }
        }
        out
    }

    /// (source, rcode, count) for every non-zero pair.
    pub fn answers(&self) -> Vec<(&'static str, u16, u64)> {
        let mut out = Vec::new();
        for src in Source::ALL {
            for (rcode, v) in self.answers[src as usize].iter().enumerate() {
                let v = v.load(Ordering::Relaxed);
                if v > 0 {
                    out.push((src.name(), rcode as u16, v));
                }
            }
        }
        out
    }
}
