//! The XDP fast path: one read of the presence filter, then at most one
//! lookup in the answers map, one answer.
//!
//! A frame is answered in the kernel only when it is all of: Ethernet to the
//! receiving interface's own address, IPv4 without options with a correct
//! header checksum, not a fragment,
//! from a usable source (not 0.0.0.0, broadcast, multicast, loopback off
//! `lo`, port 0), UDP with a consistent length to the DNS port of one of our
//! listen addresses, a plain DNS query (QR=0, OPCODE=0, TC=0, QDCOUNT=1,
//! ANCOUNT=0, NSCOUNT=0, ARCOUNT 0 or 1 with the one record an EDNS OPT of
//! version 0) with an uncompressed name of at most `MAX_NAME_LEN` bytes,
//! whose key (lower-cased name, type, class, DO, CD) is in the answers map
//! with an answer that has not expired and fits the client's UDP size.
//! Anything else is passed unchanged and counted under the first reason
//! that applied.
//!
//! The answer is the entry's header bits and sections behind the query's
//! own ID, RD, CD and question bytes, its TTLs set to the seconds left, and
//! our OPT when the query had one: the bytes the daemon renders from the
//! same entry.

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_xdp_adjust_tail},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use spartan_common::{
    ANSWER_NEEDS_HEARTBEAT, ANSWERS_MAX_ENTRIES, AnswerKey, AnswerValue, Counter, EDNS_UDP_SIZE,
    HEARTBEAT_MAX_AGE_NS, INTERFACE_SLOTS, INTERFACES_MAX_ENTRIES, Interface, InterfaceSlot,
    KEY_CD, KEY_DO, LISTEN_ADDRS_MAX_ENTRIES, MAX_NAME_LEN, MAX_TTLS, PRESENCE_WORDS, SECTIONS_MAX,
    answer_hash, interface_slot, name_mix, presence_bit,
};

use crate::checksum;

/// Every answer the kernel gives, written by the daemon (its local names
/// and its answer cache), keyed by the hash of its `AnswerKey`: hashing
/// and comparing eight bytes costs a fraction of the whole key's 104.
#[btf_map]
static SPARTAN_ANSWERS: LruHashMap<u64, AnswerValue, { ANSWERS_MAX_ENTRIES as usize }> =
    LruHashMap::new();

/// Spartan's listen addresses (wire bytes), from index 0, ended by
/// 0.0.0.0: a handful of array reads, which the verifier inlines, cost less
/// than one hash lookup.
#[btf_map]
static SPARTAN_LISTEN_ADDRS: Array<[u8; 4], { LISTEN_ADDRS_MAX_ENTRIES as usize }> = Array::new();

/// The answers map's presence filter: a clear bit means no entry for the
/// key (see `spartan_common::presence_bit`), so a query that is not there
/// costs one array read, not a hash lookup.
#[btf_map]
static SPARTAN_PRESENCE: Array<u64, { PRESENCE_WORDS as usize }> = Array::new();

/// Interfaces the program is attached to: index -> hardware address.
#[btf_map]
static SPARTAN_INTERFACES: HashMap<u32, Interface, { INTERFACES_MAX_ENTRIES as usize }> =
    HashMap::new();

/// The same interfaces in the slot their index gives, where it is theirs:
/// an array read (inlined by the verifier) instead of a hash lookup, which
/// cost about a fifth of an answer.
#[btf_map]
static SPARTAN_IFACE_SLOTS: Array<InterfaceSlot, { INTERFACE_SLOTS as usize }> = Array::new();

/// Index 0: CLOCK_MONOTONIC ns of the daemon's last heartbeat.
#[btf_map]
static SPARTAN_HEARTBEAT: Array<u64, 1> = Array::new();

/// Per-CPU counters, indexed by `Counter`.
#[btf_map]
static SPARTAN_COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

/// The DNS port, host byte order; set by the loader from `dns_port`.
#[unsafe(no_mangle)]
static SPARTAN_DNS_PORT: u16 = 53;

/// Per-CPU scratch space: the key and buffers of one answer are too large
/// for the 512-byte BPF stack.
#[btf_map]
static SPARTAN_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

#[repr(C, align(8))]
pub struct Scratch {
    /// Lower-cased question name, type, class, DO and CD: the map key.
    /// First, so that its name is 8-byte aligned for the word loop.
    key: AnswerKey,
    /// Offset of the next label length byte in the name walk.
    next_label: u32,
    /// Length of the question name, terminating zero included.
    name_len: u32,
    /// Offset of the next EDNS option in the option walk.
    opt_at: u32,
}

const NAME_WORDS: usize = MAX_NAME_LEN / 8;
const _: () = assert!(MAX_NAME_LEN % 8 == 0);

// Loop state lives in the scratch map and is accessed with volatile reads:
// the verifier never tracks the contents of a map value, so the possible
// name lengths (and label layouts) do not each become a separate path
// through the rest of the program. Every use below is bounds-checked again.
#[inline(always)]
fn get(field: &u32) -> usize {
    unsafe { core::ptr::read_volatile(field) as usize }
}

#[inline(always)]
fn put(field: &mut u32, value: usize) {
    unsafe { core::ptr::write_volatile(field, value as u32) }
}

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const DNS_HEADER_LEN: usize = 12;
/// Ethernet + IPv4 (no options) + UDP + DNS header.
const HEADERS_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + DNS_HEADER_LEN;
const IP_OFF: usize = ETH_LEN;
const UDP_OFF: usize = ETH_LEN + IPV4_LEN;
const DNS_OFF: usize = UDP_OFF + UDP_LEN;
const QNAME_OFF: usize = HEADERS_LEN;

const OPT_RR_LEN: usize = 11;
const DNS_TYPE_OPT: u16 = 41;
/// EDNS options walked in a query; a query with more goes to userspace.
const MAX_EDNS_OPTIONS: usize = 8;
/// Largest UDP reply a client without EDNS takes.
const CLASSIC_UDP_SIZE: usize = 512;
const NS_PER_S: u64 = 1_000_000_000;

#[xdp]
pub fn spartan(ctx: XdpContext) -> u32 {
    count(Counter::Packets);
    match try_answer(&ctx) {
        Ok(from_cache) => {
            count(Counter::Answered);
            if from_cache {
                count(Counter::AnsweredFromCache);
            }
            xdp_action::XDP_TX
        }
        Err(reason) => {
            count(reason);
            xdp_action::XDP_PASS
        }
    }
}

/// The floor of the benchmark: a program that does nothing at all.
#[xdp]
pub fn spartan_floor(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = SPARTAN_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    ((hi as u16) << 8) | lo as u16
}

/// The frame's end, read so that the compiler cannot relate it to lengths
/// checked earlier: it would drop a bounds check it can prove, and the
/// verifier, which cannot, would reject the read.
#[inline(always)]
fn opaque_end(ctx: &XdpContext) -> usize {
    // SAFETY: a field of the context the program was given.
    unsafe { core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize }
}

/// `N` bytes of the frame at a bounded offset, read in place; `None` past
/// the end. Direct reads cost a few instructions where a
/// `bpf_xdp_load_bytes` call costs ~40 ns. `N` is at least 2: the compiler
/// turns a one-byte check (`p + 1 > end`) into `p >= end`, which the
/// verifier does not take as a bound.
#[inline(always)]
fn bytes_at<const N: usize>(data: usize, end: usize, offset: usize) -> Option<[u8; N]> {
    const { assert!(N >= 2) };
    let p = data + offset;
    if p + N > end {
        return None;
    }
    // SAFETY: checked against the frame's end just above.
    Some(unsafe { core::ptr::read_unaligned(p as *const [u8; N]) })
}

/// The first checks read the frame in place: a frame that is not DNS for
/// us costs a few loads and compares, no helper call.
#[inline(always)]
fn classify(ctx: &XdpContext) -> Result<(), Counter> {
    let data = ctx.data();
    let end = ctx.data_end();
    if data + HEADERS_LEN > end {
        if data + ETH_LEN > end {
            return Err(Counter::PassNotIpv4);
        }
        let p = data as *const u8;
        // SAFETY: the 14 Ethernet bytes are inside the frame (checked).
        let ipv4 = unsafe { *p.add(12) == 0x08 && *p.add(13) == 0x00 };
        return Err(if ipv4 {
            Counter::PassMalformed
        } else {
            Counter::PassNotIpv4
        });
    }
    let p = data as *const u8;
    // SAFETY: HEADERS_LEN bytes are inside the frame (checked above).
    let b = |i: usize| unsafe { *p.add(i) };
    if b(12) != 0x08 || b(13) != 0x00 || b(IP_OFF) >> 4 != 4 {
        return Err(Counter::PassNotIpv4);
    }
    // IHL other than 5 means IP options; MF or a fragment offset means a fragment.
    if b(IP_OFF) & 0x0f != 5 || (b(IP_OFF + 6) & 0x3f) != 0 || b(IP_OFF + 7) != 0 {
        return Err(Counter::PassIpOptionsOrFragment);
    }
    let port = unsafe { core::ptr::read_volatile(&SPARTAN_DNS_PORT) };
    if b(IP_OFF + 9) != 17 || be16(b(UDP_OFF + 2), b(UDP_OFF + 3)) != port {
        return Err(Counter::PassNotUdpDns);
    }
    let dst = [
        b(IP_OFF + 16),
        b(IP_OFF + 17),
        b(IP_OFF + 18),
        b(IP_OFF + 19),
    ];
    if !is_listen_addr(dst) {
        return Err(Counter::PassNotOurAddress);
    }
    count(Counter::QueriesForUs);
    Ok(())
}

#[inline(always)]
fn is_listen_addr(dst: [u8; 4]) -> bool {
    let mut i = 0;
    while i < LISTEN_ADDRS_MAX_ENTRIES {
        match SPARTAN_LISTEN_ADDRS.get(i) {
            Some(addr) if *addr == dst => return true,
            // 0.0.0.0 ends the list.
            Some(addr) if *addr != [0; 4] => {}
            _ => return false,
        }
        i += 1;
    }
    false
}

/// Checked only for a query we could answer (a miss goes to the stack
/// anyway, which applies its own rules): the frame must be sent to this
/// interface's own address (a broadcast or another host's frame seen here
/// gets no answer from us), from a source an answer can go to (a spoofed
/// broadcast source would reflect it to the whole segment).
#[inline(always)]
fn check_addressing(ctx: &XdpContext) -> Result<(), Counter> {
    let data = ctx.data();
    if data + HEADERS_LEN > ctx.data_end() {
        return Err(Counter::PassMalformed);
    }
    let p = data as *const u8;
    // SAFETY: HEADERS_LEN bytes are inside the frame (checked above).
    let b = |i: usize| unsafe { *p.add(i) };
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(iface) = interface(ifindex) else {
        return Err(Counter::PassNotOurMac);
    };
    let mut m = 0;
    while m < 6 {
        if b(m) != iface.mac[m] {
            return Err(Counter::PassNotOurMac);
        }
        m += 1;
    }
    let s0 = b(IP_OFF + 12);
    let src_all = |v: u8| {
        b(IP_OFF + 12) == v && b(IP_OFF + 13) == v && b(IP_OFF + 14) == v && b(IP_OFF + 15) == v
    };
    // SAFETY: HEADERS_LEN bytes are inside the frame (checked above).
    let hdr = unsafe { &*(data as *const [u8; HEADERS_LEN]) };
    // The answer's header checksum is updated from the query's, which must
    // be right: a query the stack would drop gets no answer.
    if checksum::fold(checksum::add_range(0, hdr, IP_OFF, IPV4_LEN)) != 0xffff {
        return Err(Counter::PassMalformed);
    }
    if src_all(0)
        || src_all(0xff)
        || s0 & 0xf0 == 0xe0
        || (s0 == 127 && iface.loopback == 0)
        || (b(UDP_OFF) == 0 && b(UDP_OFF + 1) == 0)
    {
        return Err(Counter::PassBadSource);
    }
    Ok(())
}

/// The interface the frame came in on: from its slot when the slot is its
/// own, else from the hash map (a slot shared with another interface).
#[inline(always)]
fn interface(ifindex: u32) -> Option<Interface> {
    match SPARTAN_IFACE_SLOTS.get(interface_slot(ifindex)) {
        Some(slot) if slot.ifindex == ifindex => Some(slot.iface),
        // SAFETY: plain data, copied out.
        _ => unsafe { SPARTAN_INTERFACES.get(&ifindex) }.copied(),
    }
}

/// Ok(true) for an answer from the cache, Ok(false) for a local name.
fn try_answer(ctx: &XdpContext) -> Result<bool, Counter> {
    classify(ctx)?;
    let data = ctx.data();
    let end = ctx.data_end();
    let frame_len = end - data;
    if data + HEADERS_LEN > end {
        return Err(Counter::PassMalformed);
    }
    let p = data as *const u8;
    // SAFETY: HEADERS_LEN bytes are inside the frame (checked above).
    let b = |i: usize| unsafe { *p.add(i) };
    let ip = IP_OFF;
    let udp = UDP_OFF;
    // IP total length must cover UDP + DNS header and fit in the frame
    // (Ethernet padding after it is allowed); UDP length must match it.
    let ip_total = be16(b(ip + 2), b(ip + 3)) as usize;
    let udp_total = be16(b(udp + 4), b(udp + 5)) as usize;
    if ip_total < IPV4_LEN + UDP_LEN + DNS_HEADER_LEN
        || ETH_LEN + ip_total > frame_len
        || udp_total != ip_total - IPV4_LEN
    {
        return Err(Counter::PassMalformed);
    }
    let msg_end = ETH_LEN + ip_total;

    let dns = DNS_OFF;
    let flags_hi = b(dns + 2);
    if flags_hi & 0x80 != 0 {
        // QR=1: a response, such as our own answer looping back on `lo`.
        return Err(Counter::PassResponse);
    }
    // OPCODE must be QUERY and TC clear.
    if flags_hi & 0x7a != 0 {
        return Err(Counter::PassMalformed);
    }
    let qdcount = be16(b(dns + 4), b(dns + 5));
    let ancount = be16(b(dns + 6), b(dns + 7));
    let nscount = be16(b(dns + 8), b(dns + 9));
    let arcount = be16(b(dns + 10), b(dns + 11));
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return Err(Counter::PassMalformed);
    }
    let rd = flags_hi & 0x01;
    let cd = b(dns + 3) & 0x10;

    let Some(scratch) = SPARTAN_SCRATCH.get_ptr_mut(0) else {
        return Err(Counter::PassBuildFailed);
    };
    // SAFETY: the per-CPU slot belongs to this program run alone.
    let s = unsafe { &mut *scratch };
    // Bytes of the message from the name on.
    let name_room = msg_end - QNAME_OFF;
    let name_len = walk_name(
        data,
        opaque_end(ctx),
        &mut s.next_label,
        &mut s.name_len,
        name_room,
    )?;
    let q_fixed = QNAME_OFF + name_len;
    let question_end = q_fixed + 4;
    if question_end > msg_end {
        return Err(Counter::PassMalformed);
    }
    let key = &mut s.key;
    let (name_sum, name_hash) = lower_into(&mut key.name, data, opaque_end(ctx), name_len);
    let checked_end = opaque_end(ctx);
    let Some(qfix) = bytes_at::<4>(data, checked_end, q_fixed) else {
        return Err(Counter::PassMalformed);
    };
    key.qtype = be16(qfix[0], qfix[1]);
    key.qclass = be16(qfix[2], qfix[3]);
    key.pad = 0;

    // EDNS: the one additional record must be an OPT of version 0 that ends
    // the message exactly.
    let mut edns = false;
    let mut do_bit = false;
    let mut client_size = CLASSIC_UDP_SIZE;
    if arcount == 1 {
        let o = question_end;
        if o + OPT_RR_LEN > msg_end {
            return Err(Counter::PassMalformed);
        }
        let Some(opt) = bytes_at::<OPT_RR_LEN>(data, checked_end, o) else {
            return Err(Counter::PassMalformed);
        };
        if opt[0] != 0 || be16(opt[1], opt[2]) != DNS_TYPE_OPT || opt[6] != 0 {
            return Err(Counter::PassUnsupportedEdns);
        }
        let rdlen = be16(opt[9], opt[10]) as usize;
        if o + OPT_RR_LEN + rdlen != msg_end {
            return Err(Counter::PassMalformed);
        }
        edns = true;
        do_bit = opt[7] & 0x80 != 0;
        let size = be16(opt[3], opt[4]) as usize;
        if size > client_size {
            client_size = size;
        }
        if rdlen != 0 {
            check_edns_options(data, checked_end, &mut s.opt_at, o + OPT_RR_LEN, msg_end)?;
        }
    } else if question_end != msg_end {
        // Trailing bytes inside the UDP payload: not a query shape we answer.
        return Err(Counter::PassMalformed);
    }
    key.flags = if do_bit { KEY_DO } else { 0 } | if cd != 0 { KEY_CD } else { 0 };

    let hash = answer_hash(name_hash, key.qtype, key.qclass, key.flags);

    // Most queries for us are not in the map: the presence filter says so
    // without a hash lookup.
    let bit = presence_bit(hash);
    match SPARTAN_PRESENCE.get(bit / 64) {
        Some(word) if *word & (1 << (bit % 64)) != 0 => {}
        _ => return Err(Counter::PassNotInMap),
    }

    // SAFETY: read through a pointer into the map value; userspace replaces
    // entries whole (an update swaps in a new element), so the fields read
    // here belong to one answer.
    let Some(v) = SPARTAN_ANSWERS.get_ptr(&hash) else {
        return Err(Counter::PassNotInMap);
    };
    let v = unsafe { &*v };
    // The map's key is a hash: the entry must be for this very key.
    if !same_key(&v.key, key, name_len) {
        return Err(Counter::PassNotInMap);
    }
    let expires = v.expires_ns;
    let mut ttl: u32 = 0;
    if expires != 0 {
        // The coarse clock: a few ns where the precise one costs tens. It
        // lags by up to a tick, so an answer may be served that much past
        // its expiry (saying 1 s), and a fresh one would round up to a
        // second more than it was stored with: capped below.
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if now >= expires {
            return Err(Counter::PassExpired);
        }
        // Rounded up: an answer that has not expired says at least 1 s.
        ttl = ((expires - now + NS_PER_S - 1) / NS_PER_S) as u32;
        if ttl > v.ttl_s {
            ttl = v.ttl_s;
        }
    }
    if v.flags & ANSWER_NEEDS_HEARTBEAT != 0 && !heartbeat_fresh() {
        return Err(Counter::PassStaleHeartbeat);
    }
    let sections_len = v.sections_len as usize;
    // A record takes at least 11 bytes (root owner, type, class, TTL,
    // length): anything shorter is not an answer.
    if sections_len < 11 || sections_len > SECTIONS_MAX {
        return Err(Counter::PassNotInMap);
    }
    let opt_len = if edns { OPT_RR_LEN } else { 0 };
    let payload_len = DNS_HEADER_LEN + name_len + 4 + sections_len + opt_len;
    if payload_len > client_size {
        return Err(Counter::PassTooBig);
    }
    check_addressing(ctx)?;

    let new_frame_len = DNS_OFF + payload_len;
    let delta = new_frame_len as i64 - frame_len as i64;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
        return Err(Counter::PassBuildFailed);
    }

    // From here on the frame is ours: it is rewritten and sent back. A
    // failed bounds check cannot happen while the checks above hold; were
    // it to, the frame is no longer the query and the stack drops it
    // (counted). The tail adjust invalidates earlier frame pointers.
    let data = ctx.data();
    let end = opaque_end(ctx);
    if data + HEADERS_LEN > end {
        return Err(Counter::PassBuildFailed);
    }
    let mut opt_rr = [0u8; 12];
    if edns {
        write_opt(&mut opt_rr, do_bit);
    }
    // SAFETY: HEADERS_LEN bytes are inside the frame (checked above).
    let hdr = unsafe { &mut *(data as *mut [u8; HEADERS_LEN]) };
    let arcount_out = v.arcount + edns as u16;
    rewrite_headers(hdr, payload_len, v, rd, cd, arcount_out);
    let udp_sum = udp_checksum(hdr, name_sum, qfix, v, ttl, &opt_rr, name_len, opt_len);
    hdr[udp + 6] = (udp_sum >> 8) as u8;
    hdr[udp + 7] = udp_sum as u8;

    // Each write below is checked against an end read anew: the compiler
    // would otherwise drop checks it can derive from the header's.
    let end = opaque_end(ctx);
    copy_sections(data, end, question_end, v, sections_len)?;
    let ttl_be = ttl.to_be_bytes();
    let mut ttls = v.ttl_count as usize;
    if ttls > MAX_TTLS {
        ttls = MAX_TTLS;
    }
    let mut k = 0;
    while k < MAX_TTLS {
        if k >= ttls {
            break;
        }
        // Offsets come from userspace: masked so that the verifier sees a
        // bound, and checked against the frame.
        let at = question_end + ((v.ttl_at[k] as usize) & 0x1ff);
        let p = data + at;
        if p + 4 > end {
            return Err(Counter::PassBuildFailed);
        }
        // SAFETY: four bytes inside the frame (checked above).
        unsafe { core::ptr::write_unaligned(p as *mut [u8; 4], ttl_be) };
        k += 1;
    }
    if edns {
        let p = data + ((question_end + sections_len) & 0x3ff);
        if p + OPT_RR_LEN > end {
            return Err(Counter::PassBuildFailed);
        }
        let mut i = 0;
        while i < OPT_RR_LEN {
            // SAFETY: OPT_RR_LEN bytes inside the frame (checked above).
            unsafe { *((p + i) as *mut u8) = opt_rr[i] };
            i += 1;
        }
    }
    Ok(expires != 0)
}

/// Copies the entry's sections into the frame at `at`, eight bytes at a
/// time; the last word is the eight bytes that end the sections (it
/// overlaps the one before with the same bytes), so nothing past the answer
/// is written. `len` is at least 11.
#[inline(always)]
fn copy_sections(
    data: usize,
    end: usize,
    at: usize,
    v: &AnswerValue,
    len: usize,
) -> Result<(), Counter> {
    if len < 8 {
        return Err(Counter::PassBuildFailed);
    }
    let src = v.sections.as_ptr();
    let mut k = 0;
    while k < SECTIONS_MAX / 8 {
        let mut off = k * 8;
        if off + 8 > len {
            off = len - 8;
        }
        // A bound the verifier sees: the read stays inside the value.
        if off > SECTIONS_MAX - 8 {
            return Err(Counter::PassBuildFailed);
        }
        let p = data + at + off;
        if p + 8 > end {
            return Err(Counter::PassBuildFailed);
        }
        // SAFETY: `off + 8` is within `sections` (checked above), and
        // eight bytes at `p` are inside the frame (checked above).
        unsafe {
            let word = core::ptr::read_unaligned(src.add(off) as *const u64);
            core::ptr::write_unaligned(p as *mut u64, word);
        }
        if off + 8 >= len {
            break;
        }
        k += 1;
    }
    Ok(())
}

/// Walks the labels of the question name in the frame, hopping from length
/// byte to length byte (a label is at least two bytes, so MAX_NAME_LEN / 2
/// hops reach any name that fits); the name's length, terminating zero
/// included. `room`: bytes of the message from the name on.
#[inline(always)]
fn walk_name(
    data: usize,
    end: usize,
    next_label: &mut u32,
    name_len: &mut u32,
    room: usize,
) -> Result<usize, Counter> {
    put(next_label, 0);
    put(name_len, 0);
    let mut hop = 0;
    while hop < MAX_NAME_LEN / 2 {
        let at = get(next_label);
        if at >= room || at >= MAX_NAME_LEN {
            // The message ended inside the name (truncated), or the name is
            // longer than the kernel handles (userspace answers it).
            return Err(if room <= at {
                Counter::PassMalformed
            } else {
                Counter::PassNotInMap
            });
        }
        // Two bytes: a name in a well-formed query is followed by at least
        // its type and class.
        let Some([len, _]) = bytes_at::<2>(data, end, QNAME_OFF + at) else {
            return Err(Counter::PassMalformed);
        };
        if len == 0 {
            put(name_len, at + 1);
            break;
        }
        // 0b11 is a compression pointer, 0b01/0b10 are extended label
        // types: none belongs in a query's question.
        if len & 0xc0 != 0 {
            return Err(Counter::PassMalformed);
        }
        put(next_label, at + 1 + len as usize);
        hop += 1;
    }
    let len = get(name_len);
    if len == 0 || len > MAX_NAME_LEN {
        return Err(Counter::PassNotInMap);
    }
    Ok(len)
}

/// Copies the question name (`name_len` bytes, inside the frame and
/// followed by the four bytes of type and class) to the key lower-cased,
/// eight bytes at a time, zero padded; returns the ones'-complement sum of
/// the name as the client sent it (big-endian words, folded), for the
/// answer's checksum, and the name's hash. Length bytes (1..=63)
/// are below 'A' and stay as they are.
#[inline(always)]
fn lower_into(
    key: &mut [u8; MAX_NAME_LEN],
    data: usize,
    end: usize,
    name_len: usize,
) -> (u16, u64) {
    let out = key.as_mut_ptr() as *mut u64;
    let mut sum: u64 = 0;
    let mut hash: u64 = 0;
    let mut w = 0;
    while w < NAME_WORDS {
        let start = w * 8;
        if start >= name_len {
            // The words past the name are not compared (see `same_key`).
            break;
        }
        let mut x: u64 = 0;
        {
            let p = data + QNAME_OFF + start;
            if p + 8 <= end {
                // SAFETY: eight bytes inside the frame (checked above).
                x = unsafe { core::ptr::read_unaligned(p as *const u64) };
            } else if p + 4 <= end {
                // A last word that runs past the frame: the name is followed
                // by type and class, so at least four bytes are there; the
                // rest one by one, each checked (constant offsets: what the
                // verifier follows).
                // SAFETY: every read below is checked against the end.
                unsafe {
                    x = core::ptr::read_unaligned(p as *const u32) as u64;
                    if p + 5 <= end {
                        x |= (*((p + 4) as *const u8) as u64) << 32;
                    }
                    if p + 6 <= end {
                        x |= (*((p + 5) as *const u8) as u64) << 40;
                    }
                    if p + 7 <= end {
                        x |= (*((p + 6) as *const u8) as u64) << 48;
                    }
                }
            }
            if start + 8 > name_len {
                // Little-endian: the first bytes of the name are the low ones.
                x &= (1u64 << ((name_len - start) * 8)) - 1;
            }
        }
        // The little-endian 16-bit words of `x`, summed 32 bits at a time:
        // the byte-swapped big-endian sum (swapped back below).
        sum += (x & 0xffff_ffff) + (x >> 32);
        // SWAR ASCII lower-casing: 0x80 marks each byte in 'A'..='Z'.
        let heptets = x & 0x7f7f_7f7f_7f7f_7f7f;
        let above_z = heptets.wrapping_add(0x2525_2525_2525_2525); // > 'Z' sets bit 7
        let from_a = heptets.wrapping_add(0x3f3f_3f3f_3f3f_3f3f); // >= 'A' sets bit 7
        let upper = from_a & !above_z & !x & 0x8080_8080_8080_8080;
        let lowered = x | (upper >> 2);
        hash = name_mix(hash, lowered);
        // SAFETY: the key is the first field of the 8-aligned scratch value,
        // its name the key's first field; `w` < MAX_NAME_LEN / 8.
        unsafe { out.add(w).write(lowered) };
        w += 1;
    }
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    (checksum::fold(sum as u32).swap_bytes(), hash)
}

/// Whether an entry's key is the query's: type, class and flags, and the
/// name's words up to the one holding its last byte (`lower_into` wrote
/// those; the query's name is a valid one ending at `name_len`, so a stored
/// name equal over those bytes has the same labels and length, its
/// padding zero like the query's last word past the name).
#[inline(always)]
fn same_key(stored: &AnswerKey, query: &AnswerKey, name_len: usize) -> bool {
    if stored.qtype != query.qtype || stored.qclass != query.qclass || stored.flags != query.flags {
        return false;
    }
    let a = stored.name.as_ptr() as *const u64;
    let b = query.name.as_ptr() as *const u64;
    let mut w = 0;
    while w < NAME_WORDS {
        if w * 8 >= name_len {
            break;
        }
        // SAFETY: `w` < MAX_NAME_LEN / 8; both names are 8-aligned (the
        // first field of a map value and of the scratch value).
        if unsafe { a.add(w).read() != b.add(w).read() } {
            return false;
        }
        w += 1;
    }
    true
}

/// The OPT record's options must be well-formed TLVs that end exactly at
/// the end of the message. Their contents are ignored (RFC 7873 allows a
/// server to ignore a COOKIE). More options than we walk go to userspace.
#[inline(always)]
fn check_edns_options(
    data: usize,
    end: usize,
    opt_at: &mut u32,
    start: usize,
    msg_end: usize,
) -> Result<(), Counter> {
    put(opt_at, start);
    let mut k = 0;
    while k < MAX_EDNS_OPTIONS {
        let at = get(opt_at);
        if at >= msg_end {
            break;
        }
        if at + 4 > msg_end {
            return Err(Counter::PassMalformed);
        }
        // Masked: a bound the verifier can see (a frame is shorter).
        let at = at & 0x3fff;
        let Some(tlv) = bytes_at::<4>(data, end, at) else {
            return Err(Counter::PassMalformed);
        };
        put(opt_at, at + 4 + be16(tlv[2], tlv[3]) as usize);
        k += 1;
    }
    let end_at = get(opt_at);
    if end_at == msg_end {
        Ok(())
    } else if end_at < msg_end {
        Err(Counter::PassUnsupportedEdns)
    } else {
        Err(Counter::PassMalformed)
    }
}

fn heartbeat_fresh() -> bool {
    let Some(beat) = SPARTAN_HEARTBEAT.get(0) else {
        return false;
    };
    let beat = *beat;
    // Coarse: a tick's lag is nothing against the allowed age.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Zero means "never"; a beat from the future is as good as now.
    beat != 0 && now.saturating_sub(beat) <= HEARTBEAT_MAX_AGE_NS
}

/// Our OPT record: root name, UDP size 1232, version 0, the DO bit copied
/// from the query, no options (the daemon writes the same bytes).
#[inline(always)]
fn write_opt(opt: &mut [u8; 12], do_bit: bool) {
    let size = EDNS_UDP_SIZE.to_be_bytes();
    opt[0] = 0;
    opt[1] = 0;
    opt[2] = DNS_TYPE_OPT as u8;
    opt[3] = size[0];
    opt[4] = size[1];
    opt[5] = 0; // extended RCODE
    opt[6] = 0; // version
    opt[7] = if do_bit { 0x80 } else { 0 };
    opt[8] = 0;
    opt[9] = 0; // RDLENGTH
    opt[10] = 0;
    opt[11] = 0; // not sent: rounds the record up for the checksum
}

/// Turns the saved headers of the query into those of the answer.
#[inline(always)]
fn rewrite_headers(
    hdr: &mut [u8; HEADERS_LEN],
    payload_len: usize,
    v: &AnswerValue,
    rd: u8,
    cd: u8,
    arcount: u16,
) {
    let p = hdr.as_mut_ptr();
    // SAFETY: every offset below is inside the HEADERS_LEN-byte header;
    // misaligned reads and writes are fine for packet data.
    unsafe {
        // Ethernet addresses swapped: four and two bytes each.
        let dst4 = core::ptr::read_unaligned(p as *const u32);
        let dst2 = core::ptr::read_unaligned(p.add(4) as *const u16);
        let src4 = core::ptr::read_unaligned(p.add(6) as *const u32);
        let src2 = core::ptr::read_unaligned(p.add(10) as *const u16);
        core::ptr::write_unaligned(p as *mut u32, src4);
        core::ptr::write_unaligned(p.add(4) as *mut u16, src2);
        core::ptr::write_unaligned(p.add(6) as *mut u32, dst4);
        core::ptr::write_unaligned(p.add(10) as *mut u16, dst2);
        // IPv4 addresses swapped: the header's sum does not change.
        let saddr = core::ptr::read_unaligned(p.add(IP_OFF + 12) as *const u32);
        let daddr = core::ptr::read_unaligned(p.add(IP_OFF + 16) as *const u32);
        core::ptr::write_unaligned(p.add(IP_OFF + 12) as *mut u32, daddr);
        core::ptr::write_unaligned(p.add(IP_OFF + 16) as *mut u32, saddr);
    }
    let ip = IP_OFF;
    // Only the total length and the TTL change: the checksum is updated
    // (RFC 1624), not summed anew. A query whose checksum was wrong gets an
    // answer whose checksum is wrong, which the client drops as its stack
    // would have dropped the query.
    let ip_total = (IPV4_LEN + UDP_LEN + payload_len) as u16;
    let old_total = be16(hdr[ip + 2], hdr[ip + 3]);
    let old_ttl_proto = be16(hdr[ip + 8], hdr[ip + 9]);
    let new_ttl_proto = be16(64, hdr[ip + 9]);
    let old_sum = be16(hdr[ip + 10], hdr[ip + 11]);
    let sum = checksum::replace((!old_sum) as u32, old_total, ip_total);
    let ip_sum = !checksum::fold(checksum::replace(sum, old_ttl_proto, new_ttl_proto));
    hdr[ip + 2] = (ip_total >> 8) as u8;
    hdr[ip + 3] = ip_total as u8;
    hdr[ip + 8] = 64; // TTL
    hdr[ip + 10] = (ip_sum >> 8) as u8;
    hdr[ip + 11] = ip_sum as u8;

    let udp = UDP_OFF;
    // SAFETY: the four port bytes are inside the header.
    unsafe {
        let ports = core::ptr::read_unaligned(p.add(udp) as *const u32);
        core::ptr::write_unaligned(p.add(udp) as *mut u32, ports.rotate_left(16));
    }
    let udp_total = (UDP_LEN + payload_len) as u16;
    hdr[udp + 4] = (udp_total >> 8) as u8;
    hdr[udp + 5] = udp_total as u8;
    hdr[udp + 6] = 0;
    hdr[udp + 7] = 0;

    let dns = DNS_OFF;
    // The entry's QR, AA, RA, AD and RCODE; the query's RD and CD.
    let flags = v.header_flags.to_be_bytes();
    hdr[dns + 2] = flags[0] | rd;
    hdr[dns + 3] = flags[1] | cd;
    hdr[dns + 4] = 0;
    hdr[dns + 5] = 1;
    let an = v.ancount.to_be_bytes();
    let ns = v.nscount.to_be_bytes();
    let ar = arcount.to_be_bytes();
    hdr[dns + 6] = an[0];
    hdr[dns + 7] = an[1];
    hdr[dns + 8] = ns[0];
    hdr[dns + 9] = ns[1];
    hdr[dns + 10] = ar[0];
    hdr[dns + 11] = ar[1];
}

/// The UDP checksum of the answer: pseudo-header, UDP and DNS headers, the
/// question (the client's own bytes), the sections with their TTLs, the
/// OPT. The sections are not summed here: userspace stored their sum with
/// the TTL fields zero, and each TTL field adds the same two words. A
/// result of zero is sent as 0xffff.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn udp_checksum(
    hdr: &[u8; HEADERS_LEN],
    name_sum: u16,
    qfix: [u8; 4],
    v: &AnswerValue,
    ttl: u32,
    opt: &[u8; 12],
    name_len: usize,
    opt_len: usize,
) -> u16 {
    let ip = IP_OFF;
    let udp = UDP_OFF;
    // Pseudo-header: addresses, protocol, UDP length; then the UDP header
    // (checksum field zero) and the DNS header.
    let mut sum = checksum::add_range(0, hdr, ip + 12, 8);
    sum += 17;
    sum += ((hdr[udp + 4] as u32) << 8) | hdr[udp + 5] as u32;
    sum = checksum::add_range(sum, hdr, udp, UDP_LEN + DNS_HEADER_LEN);
    // The name starts at message offset 12 (even).
    sum += name_sum as u32;
    // Everything after the name starts at an odd offset when its length is.
    let odd = name_len % 2 == 1;
    let fixed = ((qfix[0] as u32) << 8 | qfix[1] as u32) + ((qfix[2] as u32) << 8 | qfix[3] as u32);
    sum += checksum::at_offset(checksum::fold(fixed), odd);
    sum += checksum::at_offset(v.sections_sum, odd);
    // Each TTL field adds its two words, swapped at an odd offset within
    // the sections.
    let t = checksum::fold((ttl >> 16) + (ttl & 0xffff)) as u32;
    let mut even_ttls = v.ttl_parity[0] as u32;
    let mut odd_ttls = v.ttl_parity[1] as u32;
    if even_ttls > MAX_TTLS as u32 {
        even_ttls = MAX_TTLS as u32;
    }
    if odd_ttls > MAX_TTLS as u32 {
        odd_ttls = MAX_TTLS as u32;
    }
    let ttls = even_ttls * t + odd_ttls * (t as u16).swap_bytes() as u32;
    sum += checksum::at_offset(checksum::fold(ttls), odd);
    if opt_len != 0 {
        let opt_odd = (name_len + v.sections_len as usize) % 2 == 1;
        let opt_sum = checksum::fold(checksum::add_range(0, opt, 0, 12));
        sum += checksum::at_offset(opt_sum, opt_odd);
    }
    let csum = !checksum::fold(sum);
    if csum == 0 { 0xffff } else { csum }
}
