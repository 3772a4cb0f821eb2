//! Types shared by the XDP program (`spartan-ebpf`) and the daemon (`spartan`).
//!
//! Everything here is `#[repr(C)]`, padding-free and plain data, so that the
//! kernel and userspace agree on the bytes of every map key and value.
#![no_std]

/// Longest question name, in wire format including the final zero label, that
/// the kernel handles. Longer names go to userspace untouched.
pub const MAX_NAME_LEN: usize = 32;

/// Most A records the kernel puts in one answer.
pub const MAX_ADDRS: usize = 8;

/// The UDP payload size Spartan advertises in its EDNS OPT record.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// A name whose answer is proof of life is answered by the kernel only while
/// the daemon's heartbeat is at most this old.
pub const HEARTBEAT_MAX_AGE_NS: u64 = 3_000_000_000;

/// DNS record type A.
pub const QTYPE_A: u16 = 1;

/// Names of the pinned maps under [`PIN_DIR`].
pub mod map_names {
    /// `AnswerKey` -> `AnswerValue`: the records the kernel answers.
    pub const ANSWERS: &str = "SPARTAN_ANSWERS";
    /// IPv4 address (its four wire bytes, `[u8; 4]`) -> 1.
    pub const LISTEN_ADDRS: &str = "SPARTAN_LISTEN_ADDRS";
    /// One `u64`: CLOCK_MONOTONIC nanoseconds of the daemon's last heartbeat.
    pub const HEARTBEAT: &str = "SPARTAN_HEARTBEAT";
    /// Per-CPU `u64` counters indexed by `Counter`.
    pub const COUNTERS: &str = "SPARTAN_COUNTERS";
}

/// Entries of the answers map (the program's definition and the daemon's
/// check of pinned maps both read this).
pub const ANSWERS_MAX_ENTRIES: u32 = 1024;
/// Entries of the listen-address map.
pub const LISTEN_ADDRS_MAX_ENTRIES: u32 = 64;

/// Where the daemon pins maps and links.
pub const PIN_DIR: &str = "/sys/fs/bpf/spartan";

/// Key of the answers map: a lower-cased wire-format name, zero padded, and
/// the query type.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    /// Wire-format name (length-prefixed labels ending with a zero label),
    /// ASCII lower-cased, zero padded to `MAX_NAME_LEN`.
    pub name: [u8; MAX_NAME_LEN],
    /// Query type in host byte order.
    pub qtype: u16,
    /// Always zero; keeps the key free of implicit padding.
    pub pad: u16,
}

impl AnswerKey {
    pub const fn zeroed() -> Self {
        Self {
            name: [0; MAX_NAME_LEN],
            qtype: 0,
            pad: 0,
        }
    }
}

/// Answer flag: answer only while the heartbeat is fresh (`ready.spartan`).
pub const ANSWER_NEEDS_HEARTBEAT: u32 = 1;

/// Value of the answers map: up to `MAX_ADDRS` IPv4 addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerValue {
    /// TTL in seconds, host byte order.
    pub ttl: u32,
    /// Number of valid entries in `addrs` (1..=MAX_ADDRS).
    pub count: u32,
    /// `ANSWER_*` flags.
    pub flags: u32,
    /// IPv4 addresses as their four wire bytes.
    pub addrs: [[u8; 4]; MAX_ADDRS],
}

/// What the per-CPU counters count. The discriminant is the map index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every frame the program saw.
    Packets = 0,
    /// UDP/53 IPv4 DNS queries to one of our listen addresses.
    QueriesForUs = 1,
    /// Queries answered in the kernel with XDP_TX.
    Answered = 2,
    /// Passed: not an IPv4 frame.
    PassNotIpv4 = 3,
    /// Passed: IPv4 with options, or a fragment.
    PassIpOptionsOrFragment = 4,
    /// Passed: not UDP to port 53.
    PassNotUdp53 = 5,
    /// Passed: a DNS response (QR=1), such as our own answer coming back on `lo`.
    PassResponse = 6,
    /// Passed: destination is not one of our listen addresses.
    PassNotOurAddress = 7,
    /// Passed: truncated or malformed packet, or a query shape we leave to userspace.
    PassMalformed = 8,
    /// Passed: EDNS version other than 0, or an additional record other than OPT.
    PassUnsupportedEdns = 9,
    /// Passed: question is not class IN type A.
    PassNotAIn = 10,
    /// Passed: name not in the answers map (or longer than the kernel handles).
    PassNameNotInMap = 11,
    /// Passed: the name needs a fresh heartbeat and the daemon's is stale.
    PassStaleHeartbeat = 12,
    /// Passed: the answer could not be built (tail adjust or store failed).
    PassBuildFailed = 13,
}

impl Counter {
    /// Number of counters; the size of the counters map.
    pub const COUNT: u32 = 14;

    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::QueriesForUs,
        Counter::Answered,
        Counter::PassNotIpv4,
        Counter::PassIpOptionsOrFragment,
        Counter::PassNotUdp53,
        Counter::PassResponse,
        Counter::PassNotOurAddress,
        Counter::PassMalformed,
        Counter::PassUnsupportedEdns,
        Counter::PassNotAIn,
        Counter::PassNameNotInMap,
        Counter::PassStaleHeartbeat,
        Counter::PassBuildFailed,
    ];

    /// A stable snake_case name, for `spartan stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::QueriesForUs => "queries_for_us",
            Counter::Answered => "answered",
            Counter::PassNotIpv4 => "pass_not_ipv4",
            Counter::PassIpOptionsOrFragment => "pass_ip_options_or_fragment",
            Counter::PassNotUdp53 => "pass_not_udp53",
            Counter::PassResponse => "pass_response",
            Counter::PassNotOurAddress => "pass_not_our_address",
            Counter::PassMalformed => "pass_malformed",
            Counter::PassUnsupportedEdns => "pass_unsupported_edns",
            Counter::PassNotAIn => "pass_not_a_in",
            Counter::PassNameNotInMap => "pass_name_not_in_map",
            Counter::PassStaleHeartbeat => "pass_stale_heartbeat",
            Counter::PassBuildFailed => "pass_build_failed",
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are `repr(C)` plain data without implicit padding.
    unsafe impl aya::Pod for super::AnswerKey {}
    unsafe impl aya::Pod for super::AnswerValue {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<AnswerKey>(), MAX_NAME_LEN + 4);
        assert_eq!(core::mem::size_of::<AnswerValue>(), 12 + 4 * MAX_ADDRS);
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
