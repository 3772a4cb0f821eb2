//! The daemon's counters: plain atomics, read by `spartan stats` and the
//! metrics endpoint.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use hickory_proto::op::ResponseCode;
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family},
};
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
    /// Queries dropped because `max_in_flight` forwarded queries were in
    /// flight (or a reply could not be sent for lack of room).
    dropped_overload,
    /// Queries dropped because their client (source address) held its
    /// whole share of the in-flight budget.
    dropped_client_share,
    /// Queries dropped because every upstream of their route held its whole
    /// share of outstanding exchanges (a dead zone).
    dropped_upstream_share,
    /// Forwarded queries in flight now (a gauge).
    in_flight,
    /// Upstream replies larger than the client takes over UDP, answered
    /// with TC at once.
    truncated_for_client,
    /// TCP connections closed because the client did not read its replies.
    tcp_write_timeouts,
    /// Accept loops that paused because no descriptor was left (EMFILE).
    accept_backoffs,
    /// HTTP connections refused because the API's connection cap was reached.
    http_refused,
    /// TCP connections refused because `max_tcp_connections` were open.
    tcp_refused,
    /// Upstream replies dropped: wrong source, ID or question.
    upstream_stray,
    /// Upstream exchanges that timed out.
    upstream_timeouts,
    /// Upstream exchanges that failed otherwise (network error, bad reply).
    upstream_errors,
    /// Queries answered from the userspace answer cache.
    cache_hits,
    /// Cacheable queries that found no fresh entry and went upstream.
    cache_misses,
    /// Expired answers served because every upstream of the route failed
    /// (RFC 8767).
    cache_stale_served,
    /// Queries that waited for an identical query's upstream exchange
    /// instead of starting their own (single-flight).
    cache_flight_waits,
    /// Upstream answers stored in the cache.
    cache_inserts,
    /// Entries pushed out by `max_entries` or `max_bytes`.
    cache_evictions,
    /// Entries the kernel map could not take (a failed map update).
    cache_mirror_errors,
}

impl Stats {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a query was dropped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Garbage, or a response where a query was expected.
    Garbage,
    /// The global in-flight budget is used up.
    Overload,
    /// The client's share of the budget is used up.
    ClientShare,
    /// Every upstream of the route holds its whole share.
    UpstreamShare,
}

impl Stats {
    /// Counts a dropped query under its reason.
    pub fn dropped(&self, reason: DropReason) {
        Self::inc(match reason {
            DropReason::Garbage => &self.dropped_garbage,
            DropReason::Overload => &self.dropped_overload,
            DropReason::ClientShare => &self.dropped_client_share,
            DropReason::UpstreamShare => &self.dropped_upstream_share,
        });
    }

    /// Counts a reply at the one place every reply passes: the query's
    /// outcome, the answer's source and RCODE, and the source's total.
    pub fn replied(&self, tcp: bool, origin: ReplyOrigin, rcode: ResponseCode) {
        let (outcome, source, total) = match origin {
            ReplyOrigin::Local => (Outcome::Local, Source::Local, &self.answered_local),
            ReplyOrigin::Error => (Outcome::Error, Source::Local, &self.answered_local),
            ReplyOrigin::Upstream => (
                Outcome::Forwarded,
                Source::Upstream,
                &self.answered_upstream,
            ),
            ReplyOrigin::Generated => (
                Outcome::Forwarded,
                Source::Generated,
                &self.servfail_generated,
            ),
            ReplyOrigin::Cache => (Outcome::Cached, Source::Cache, &self.cache_hits),
            ReplyOrigin::Stale => (Outcome::Cached, Source::Cache, &self.cache_stale_served),
        };
        if origin != ReplyOrigin::Error {
            Self::inc(total);
        }
        self.breakdown.query(tcp, outcome);
        self.breakdown.answer(source, rcode);
    }
}

/// Who made a reply, as the response boundary counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyOrigin {
    /// The local zones.
    Local,
    /// An error reply to a bad query (FORMERR, NOTIMP, BADVERS, REFUSED).
    Error,
    /// An upstream's reply, relayed (or cut to TC for the client).
    Upstream,
    /// A SERVFAIL Spartan made (every upstream failed, or a limit).
    Generated,
    /// A fresh answer from the cache.
    Cache,
    /// An expired answer from the cache, served because every upstream
    /// failed.
    Stale,
}

/// Who produced an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The XDP program (read from its per-CPU counters at each scrape).
    Kernel,
    /// The local zones (and error replies Spartan makes for bad queries).
    Local,
    /// An upstream's reply, relayed.
    Upstream,
    /// A SERVFAIL Spartan made because every upstream failed.
    Generated,
    /// The answer cache (fresh or stale).
    Cache,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Kernel => "kernel",
            Source::Local => "local",
            Source::Upstream => "upstream",
            Source::Generated => "generated",
            Source::Cache => "cache",
        }
    }
}

/// What became of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Answered from the local zones.
    Local,
    /// Forwarded upstream.
    Forwarded,
    /// Answered with an error (FORMERR, NOTIMP, BADVERS, REFUSED).
    Error,
    /// Dropped: garbage, a response, or overload.
    Dropped,
    /// Answered from the userspace cache.
    Cached,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Local => "local",
            Outcome::Forwarded => "forwarded",
            Outcome::Error => "error",
            Outcome::Dropped => "dropped",
            Outcome::Cached => "cached",
        }
    }
}

/// The protocol a query came over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Udp,
    Tcp,
}

/// An answer's RCODE as a label: its mnemonic as dig prints it, or `all`
/// for the kernel, which counts its answers but not their RCODEs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RcodeLabel {
    Code(ResponseCode),
    All,
}

impl RcodeLabel {
    pub fn name(self) -> String {
        let code = match self {
            RcodeLabel::All => return "all".into(),
            RcodeLabel::Code(code) => code,
        };
        match code {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::FormErr => "FORMERR",
            ResponseCode::ServFail => "SERVFAIL",
            ResponseCode::NXDomain => "NXDOMAIN",
            ResponseCode::NotImp => "NOTIMP",
            ResponseCode::Refused => "REFUSED",
            ResponseCode::YXDomain => "YXDOMAIN",
            ResponseCode::YXRRSet => "YXRRSET",
            ResponseCode::NXRRSet => "NXRRSET",
            ResponseCode::NotAuth => "NOTAUTH",
            ResponseCode::NotZone => "NOTZONE",
            ResponseCode::BADVERS => "BADVERS",
            other => return u16::from(other).to_string(),
        }
        .into()
    }
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(&self.name())
            }
        }
    )*};
}
label_value!(Source, Outcome, RcodeLabel);

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encoder.write_str(match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
        })
    }
}

/// The labels of `spartan_queries`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct QueryLabels {
    pub protocol: Protocol,
    pub outcome: Outcome,
}

/// The labels of `spartan_answers`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AnswerLabels {
    pub source: Source,
    pub rcode: RcodeLabel,
}

/// Queries by protocol and outcome; answers by source and RCODE (at most
/// 16 RCODEs: only the header's are read).
#[derive(Debug)]
pub struct Breakdown {
    pub queries: Family<QueryLabels, Counter>,
    pub answers: Family<AnswerLabels, Counter>,
}

impl Default for Breakdown {
    /// Every protocol and outcome from the start, at 0, so that a rate is
    /// defined before the first query of its kind.
    fn default() -> Self {
        let queries = Family::default();
        for protocol in [Protocol::Udp, Protocol::Tcp] {
            for outcome in [
                Outcome::Local,
                Outcome::Forwarded,
                Outcome::Error,
                Outcome::Dropped,
                Outcome::Cached,
            ] {
                let _ = queries.get_or_create(&QueryLabels { protocol, outcome });
            }
        }
        Self {
            queries,
            answers: Family::default(),
        }
    }
}

impl Breakdown {
    pub fn query(&self, tcp: bool, outcome: Outcome) {
        let protocol = if tcp { Protocol::Tcp } else { Protocol::Udp };
        self.queries
            .get_or_create(&QueryLabels { protocol, outcome })
            .inc();
    }

    pub fn answer(&self, source: Source, rcode: ResponseCode) {
        self.answers
            .get_or_create(&AnswerLabels {
                source,
                rcode: RcodeLabel::Code(rcode),
            })
            .inc();
    }
}
