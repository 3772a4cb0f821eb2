//! Types shared by the XDP program (`spartan-ebpf`) and the daemon (`spartan`).
//!
//! Everything here is `#[repr(C)]`, padding-free and plain data, so that the
//! kernel and userspace agree on the bytes of every map key and value.
#![no_std]

/// Longest question name, in wire format including the final zero label, that
/// the kernel handles. Longer names go to userspace untouched.
pub const MAX_NAME_LEN: usize = 96;

/// Bytes of answer, authority and additional records (the OPT excluded) one
/// kernel entry holds; a larger answer is cached in userspace only.
pub const SECTIONS_MAX: usize = 448;

/// TTL fields one kernel entry can age; an answer with more records is
/// cached in userspace only.
pub const MAX_TTLS: usize = 16;

/// The UDP payload size Spartan advertises in its EDNS OPT record.
pub const EDNS_UDP_SIZE: u16 = 1232;

/// A name whose answer is proof of life is answered by the kernel only while
/// the daemon's heartbeat is at most this old.
pub const HEARTBEAT_MAX_AGE_NS: u64 = 3_000_000_000;

/// Names of the pinned maps under [`PIN_DIR`].
pub mod map_names {
    /// `AnswerKey::hash` (`u64`) -> `AnswerValue` (which holds the whole
    /// `AnswerKey`): every answer the kernel gives (local names and the
    /// mirror of the answer cache), an LRU hash.
    pub const ANSWERS: &str = "SPARTAN_ANSWERS";
    /// An array of IPv4 addresses (each its four wire bytes, `[u8; 4]`),
    /// filled from index 0 and ended by the first 0.0.0.0.
    pub const LISTEN_ADDRS: &str = "SPARTAN_LISTEN_ADDRS";
    /// Interface index (`u32`) -> `Interface`: the interfaces the program is
    /// attached to, with their hardware address.
    pub const INTERFACES: &str = "SPARTAN_INTERFACES";
    /// `INTERFACE_SLOTS` `InterfaceSlot`s, indexed by
    /// [`interface_slot`](super::interface_slot): the same interfaces
    /// where their slot is theirs (read by the program without a hash
    /// lookup); an interface whose slot another holds is only in
    /// `INTERFACES`.
    pub const INTERFACE_SLOTS: &str = "SPARTAN_IFACE_SLOTS";
    /// One `u64`: CLOCK_MONOTONIC nanoseconds of the daemon's last heartbeat.
    pub const HEARTBEAT: &str = "SPARTAN_HEARTBEAT";
    /// Per-CPU `u64` counters indexed by `Counter`.
    pub const COUNTERS: &str = "SPARTAN_COUNTERS";
    /// `PRESENCE_WORDS` `u64`s: the answers map's presence filter (see
    /// [`presence_bit`](super::presence_bit)).
    pub const PRESENCE: &str = "SPARTAN_PRESENCE";
}

/// Words of the presence filter: 2^18 bits, one set for each key of the
/// answers map (several keys may share one). A query whose bit is clear
/// is not in the map, which the XDP program learns from one array read
/// instead of a hash lookup.
pub const PRESENCE_WORDS: u32 = 4096;
const PRESENCE_BITS_LOG2: u32 = 18;
const _: () = assert!(1 << PRESENCE_BITS_LOG2 == PRESENCE_WORDS as usize * 64);

/// Multiplier of the presence hash (2^64 divided by the golden ratio).
const PRESENCE_K: u64 = 0x9e37_79b9_7f4a_7c15;

/// Folds one eight-byte word of a key's name (read little-endian, bytes
/// past the name zero) into the name hash; the name's words are mixed in
/// order, from a hash of zero, up to the word that holds its last byte.
#[inline(always)]
pub fn name_mix(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(PRESENCE_K).rotate_left(31)
}

/// The answers map's key for a key's name hash, type, class and flags.
///
/// Not a keyed hash: names can be made to collide with a known one. The
/// daemon writes the first of two colliding keys and keeps the other in
/// userspace, and the program compares the whole key stored in the value,
/// so a collision costs a name its kernel answers, never a wrong answer.
#[inline(always)]
pub fn answer_hash(name_hash: u64, qtype: u16, qclass: u16, flags: u16) -> u64 {
    let tail = qtype as u64 | (qclass as u64) << 16 | (flags as u64) << 32;
    let hash = (name_hash ^ tail).wrapping_mul(PRESENCE_K);
    hash ^ (hash >> 32)
}

/// The presence filter's bit for an answers-map key.
#[inline(always)]
pub fn presence_bit(answer_hash: u64) -> u32 {
    (answer_hash.wrapping_mul(PRESENCE_K) >> (64 - PRESENCE_BITS_LOG2)) as u32
}

/// Entries of the answers map. The daemon mirrors at most
/// [`KERNEL_MIRROR_MAX`] cache entries into it, so that the kernel's LRU
/// never has to evict (its per-CPU free lists can evict before the map is
/// full) and the local names are never pushed out.
pub const ANSWERS_MAX_ENTRIES: u32 = 16384;
/// Cache entries the daemon keeps in the kernel map at most.
pub const KERNEL_MIRROR_MAX: usize = 8192;
/// Entries of the listen-address map.
pub const LISTEN_ADDRS_MAX_ENTRIES: u32 = 64;
/// Entries of the interface map.
pub const INTERFACES_MAX_ENTRIES: u32 = 1024;
/// Slots of the interface array (a power of two).
pub const INTERFACE_SLOTS: u32 = 1024;
const _: () = assert!(INTERFACE_SLOTS.is_power_of_two());

/// The slot of the interface array an interface may hold.
#[inline(always)]
pub const fn interface_slot(ifindex: u32) -> u32 {
    ifindex & (INTERFACE_SLOTS - 1)
}

/// Name of the program's global holding the DNS port (host byte order),
/// set when the program is loaded.
pub const DNS_PORT_GLOBAL: &str = "SPARTAN_DNS_PORT";

/// Where the daemon pins maps and links.
pub const PIN_DIR: &str = "/sys/fs/bpf/spartan";

/// Key flag: the query had an OPT record with the DO bit.
pub const KEY_DO: u16 = 1;
/// Key flag: the query had the CD bit.
pub const KEY_CD: u16 = 2;

/// What the cache keys on, the same in userspace and in the kernel; the
/// answers map is keyed by its hash and holds it whole in the value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AnswerKey {
    /// Wire-format name (length-prefixed labels ending with a zero label),
    /// ASCII lower-cased, zero padded to `MAX_NAME_LEN`.
    pub name: [u8; MAX_NAME_LEN],
    /// Query type, host byte order.
    pub qtype: u16,
    /// Query class, host byte order.
    pub qclass: u16,
    /// `KEY_DO` | `KEY_CD`.
    pub flags: u16,
    /// Always zero; keeps the key free of implicit padding.
    pub pad: u16,
}

impl AnswerKey {
    /// Length of the key's wire name, terminating zero included (0 for a
    /// name that does not end within the key).
    pub fn name_len(&self) -> usize {
        let mut at = 0;
        while at < MAX_NAME_LEN {
            if self.name[at] == 0 {
                return at + 1;
            }
            at += self.name[at] as usize + 1;
        }
        0
    }

    /// The answers map's key for this key (as the XDP program computes it).
    pub fn hash(&self) -> u64 {
        let words = self.name_len().div_ceil(8);
        let mut hash = 0;
        for chunk in self.name.chunks_exact(8).take(words) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            hash = name_mix(hash, u64::from_le_bytes(word));
        }
        answer_hash(hash, self.qtype, self.qclass, self.flags)
    }

    /// The key's bit in the presence filter.
    pub fn presence_bit(&self) -> u32 {
        presence_bit(self.hash())
    }

    pub const fn zeroed() -> Self {
        Self {
            name: [0; MAX_NAME_LEN],
            qtype: 0,
            qclass: 0,
            flags: 0,
            pad: 0,
        }
    }
}

/// Answer flag: answer only while the heartbeat is fresh (`ready.spartan`).
pub const ANSWER_NEEDS_HEARTBEAT: u16 = 1;

/// Value of the answers map: everything of an answer but the ID, the
/// question and the OPT, which come from the query.
///
/// The sections are the records as received, so their compression pointers
/// stay valid: they point into the question, which the client sent with the
/// same length, or into the sections themselves.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerValue {
    /// The key this answer is for: the program answers only a query whose
    /// key equals it (the map's key is only a hash of it).
    pub key: AnswerKey,
    /// CLOCK_MONOTONIC ns when the answer expires; 0 for a fixed answer
    /// (the local names), whose TTLs are in the sections as they are.
    pub expires_ns: u64,
    /// `ANSWER_*` flags.
    pub flags: u16,
    /// Bytes 2-3 of the answer's header (QR, AA, RA, AD, RCODE); RD and CD
    /// are taken from the query, TC is always clear.
    pub header_flags: u16,
    pub ancount: u16,
    pub nscount: u16,
    /// Additional records, the OPT not counted.
    pub arcount: u16,
    /// Meaningful bytes of `sections`.
    pub sections_len: u16,
    /// Meaningful entries of `ttl_at`.
    pub ttl_count: u16,
    /// TTL fields at an even (`[0]`) and odd (`[1]`) offset of `sections`.
    pub ttl_parity: [u16; 2],
    /// The ones'-complement sum (RFC 1071, big-endian words from an even
    /// offset, folded) of `sections` with every TTL field zero.
    pub sections_sum: u16,
    /// The TTL the answer was stored with: the seconds left the program
    /// writes never exceed it (it reads a coarse clock, which lags).
    pub ttl_s: u32,
    /// Offsets of the TTL fields in `sections`; those fields hold zeros.
    pub ttl_at: [u16; MAX_TTLS],
    /// Answer, authority and additional records, zero padded.
    pub sections: [u8; SECTIONS_MAX],
}

impl AnswerValue {
    pub const fn zeroed() -> Self {
        Self {
            key: AnswerKey::zeroed(),
            expires_ns: 0,
            flags: 0,
            header_flags: 0,
            ancount: 0,
            nscount: 0,
            arcount: 0,
            sections_len: 0,
            ttl_count: 0,
            ttl_parity: [0; 2],
            sections_sum: 0,
            ttl_s: 0,
            ttl_at: [0; MAX_TTLS],
            sections: [0; SECTIONS_MAX],
        }
    }
}

/// Value of the interface map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interface {
    /// The interface's hardware address (zero on `lo`).
    pub mac: [u8; 6],
    /// 1 on a loopback interface, where 127.0.0.0/8 sources are normal.
    pub loopback: u8,
    pub pad: u8,
}

/// Value of the interface array: an interface and its index (0: a free
/// slot; no interface has index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterfaceSlot {
    pub ifindex: u32,
    pub iface: Interface,
}

impl InterfaceSlot {
    /// A slot no interface holds.
    pub const FREE: Self = Self {
        ifindex: 0,
        iface: Interface {
            mac: [0; 6],
            loopback: 0,
            pad: 0,
        },
    };
}

/// What the per-CPU counters count. The discriminant is the map index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every frame the program saw.
    Packets = 0,
    /// UDP IPv4 DNS queries to one of our listen addresses and port.
    QueriesForUs = 1,
    /// Queries answered in the kernel with XDP_TX (local names and cache hits).
    Answered = 2,
    /// ... of which from a cache entry (an answer with an expiry).
    AnsweredFromCache = 3,
    /// Passed: not an IPv4 frame.
    PassNotIpv4 = 4,
    /// Passed: IPv4 with options, or a fragment.
    PassIpOptionsOrFragment = 5,
    /// Passed: not UDP to the DNS port.
    PassNotUdpDns = 6,
    /// Passed: destination is not one of our listen addresses.
    PassNotOurAddress = 7,
    /// Passed: the Ethernet destination is not the receiving interface's address (or the interface is unknown).
    PassNotOurMac = 8,
    /// Passed: source 0.0.0.0, broadcast, multicast, loopback off `lo`, or port 0.
    PassBadSource = 9,
    /// Passed: a DNS response (QR=1), such as our own answer coming back on `lo`.
    PassResponse = 10,
    /// Passed: truncated or malformed packet, or a query shape we leave to userspace.
    PassMalformed = 11,
    /// Passed: EDNS version other than 0, or an additional record other than OPT.
    PassUnsupportedEdns = 12,
    /// Passed: no answer for the key (or a name longer than the kernel handles).
    PassNotInMap = 13,
    /// Passed: the cached answer has expired (userspace refreshes it).
    PassExpired = 14,
    /// Passed: the name needs a fresh heartbeat and the daemon's is stale.
    PassStaleHeartbeat = 15,
    /// Passed: the answer is larger than the client takes over UDP.
    PassTooBig = 16,
    /// Passed: the answer could not be built (tail adjust or store failed).
    PassBuildFailed = 17,
}

impl Counter {
    /// Number of counters; the size of the counters map.
    pub const COUNT: u32 = 18;

    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::QueriesForUs,
        Counter::Answered,
        Counter::AnsweredFromCache,
        Counter::PassNotIpv4,
        Counter::PassIpOptionsOrFragment,
        Counter::PassNotUdpDns,
        Counter::PassNotOurAddress,
        Counter::PassNotOurMac,
        Counter::PassBadSource,
        Counter::PassResponse,
        Counter::PassMalformed,
        Counter::PassUnsupportedEdns,
        Counter::PassNotInMap,
        Counter::PassExpired,
        Counter::PassStaleHeartbeat,
        Counter::PassTooBig,
        Counter::PassBuildFailed,
    ];

    /// A stable snake_case name, for `spartan stats` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::QueriesForUs => "queries_for_us",
            Counter::Answered => "answered",
            Counter::AnsweredFromCache => "answered_from_cache",
            Counter::PassNotIpv4 => "pass_not_ipv4",
            Counter::PassIpOptionsOrFragment => "pass_ip_options_or_fragment",
            Counter::PassNotUdpDns => "pass_not_udp_dns",
            Counter::PassNotOurAddress => "pass_not_our_address",
            Counter::PassNotOurMac => "pass_not_our_mac",
            Counter::PassBadSource => "pass_bad_source",
            Counter::PassResponse => "pass_response",
            Counter::PassMalformed => "pass_malformed",
            Counter::PassUnsupportedEdns => "pass_unsupported_edns",
            Counter::PassNotInMap => "pass_not_in_map",
            Counter::PassExpired => "pass_expired",
            Counter::PassStaleHeartbeat => "pass_stale_heartbeat",
            Counter::PassTooBig => "pass_too_big",
            Counter::PassBuildFailed => "pass_build_failed",
        }
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are `repr(C)` plain data without implicit padding.
    unsafe impl aya::Pod for super::AnswerKey {}
    unsafe impl aya::Pod for super::AnswerValue {}
    unsafe impl aya::Pod for super::Interface {}
    unsafe impl aya::Pod for super::InterfaceSlot {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<AnswerKey>(), MAX_NAME_LEN + 8);
        assert_eq!(
            core::mem::size_of::<AnswerValue>(),
            MAX_NAME_LEN + 8 + 8 + 2 * 12 + 2 * MAX_TTLS + SECTIONS_MAX
        );
        assert_eq!(core::mem::size_of::<AnswerValue>() % 8, 0);
        assert_eq!(core::mem::size_of::<Interface>(), 8);
        assert_eq!(core::mem::size_of::<InterfaceSlot>(), 12);
    }

    fn key(name: &[u8], qtype: u16, flags: u16) -> AnswerKey {
        let mut key = AnswerKey::zeroed();
        key.name[..name.len()].copy_from_slice(name);
        key.qtype = qtype;
        key.qclass = 1;
        key.flags = flags;
        key
    }

    #[test]
    fn a_name_ends_at_its_zero_label_whatever_its_labels_hold() {
        assert_eq!(key(b"\x03www\x07example\x00", 1, 0).name_len(), 13);
        // A zero byte inside a label is not the end.
        assert_eq!(key(b"\x03a\x00b\x00", 1, 0).name_len(), 5);
        assert_eq!(key(&[63; MAX_NAME_LEN], 1, 0).name_len(), 0);
    }

    #[test]
    fn the_hash_covers_the_whole_key() {
        let base = key(b"\x03www\x07example\x00", 1, 0);
        let others = [
            key(b"\x03www\x07exampld\x00", 1, 0),
            key(b"\x03www\x07example\x00", 28, 0),
            key(b"\x03www\x07example\x00", 1, KEY_DO),
            key(b"\x03www\x07example\x00", 1, KEY_CD),
            AnswerKey { qclass: 3, ..base },
        ];
        for other in others {
            assert_ne!(base.hash(), other.hash(), "{other:?}");
        }
        assert_eq!(base.hash(), key(b"\x03www\x07example\x00", 1, 0).hash());
        assert!(base.presence_bit() < PRESENCE_WORDS * 64);
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }
}
