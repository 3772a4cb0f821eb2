//! The XDP fast path.
//!
//! A frame is answered in the kernel only when it is all of: Ethernet, IPv4
//! without options, not a fragment, UDP with a consistent length to port 53
//! of one of our listen addresses, a plain DNS query (QR=0, OPCODE=0, TC=0,
//! QDCOUNT=1, ANCOUNT=0, NSCOUNT=0, ARCOUNT 0 or 1 with the one record an
//! EDNS OPT of version 0), for class IN type A, with an uncompressed name
//! found in the answers map. Anything else is passed unchanged and counted
//! under the first reason that applied.

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, HashMap, PerCpuArray},
    helpers::generated::{
        bpf_ktime_get_ns, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use spartan_common::{
    ANSWER_NEEDS_HEARTBEAT, ANSWERS_MAX_ENTRIES, AnswerKey, AnswerValue, Counter, EDNS_UDP_SIZE,
    HEARTBEAT_MAX_AGE_NS, LISTEN_ADDRS_MAX_ENTRIES, MAX_ADDRS, MAX_NAME_LEN, QTYPE_A,
};

use crate::checksum;

/// The records answered in the kernel, written by the daemon's zone model.
#[btf_map]
static SPARTAN_ANSWERS: HashMap<AnswerKey, AnswerValue, { ANSWERS_MAX_ENTRIES as usize }> =
    HashMap::new();

/// Spartan's listen addresses (wire bytes) -> 1.
#[btf_map]
static SPARTAN_LISTEN_ADDRS: HashMap<[u8; 4], u8, { LISTEN_ADDRS_MAX_ENTRIES as usize }> =
    HashMap::new();

/// Index 0: CLOCK_MONOTONIC ns of the daemon's last heartbeat.
#[btf_map]
static SPARTAN_HEARTBEAT: Array<u64, 1> = Array::new();

/// Per-CPU scratch space: the buffers of one answer are too large for the
/// 512-byte BPF stack.
#[btf_map]
static SPARTAN_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

#[repr(C)]
pub struct Scratch {
    /// The frame's headers, rewritten into the answer's.
    hdr: [u8; HEADERS_LEN],
    /// Lower-cased question name and type: the answers map key.
    key: AnswerKey,
    /// The question name as the client sent it.
    raw: [u8; MAX_NAME_LEN],
    /// Everything after the name in the answer.
    tail: [u8; TAIL_BUF],
    /// Offset of the next label length byte in the name walk.
    next_label: u32,
    /// Length of the question name, terminating zero included.
    name_len: u32,
    /// Offset of the next EDNS option in the option walk.
    opt_at: u32,
}

// Loop state lives in the scratch map and is accessed with volatile reads:
// the verifier never tracks the contents of a map value, so the 48 possible
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

/// Per-CPU counters, indexed by `Counter`.
#[btf_map]
static SPARTAN_COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

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
const ANSWER_RR_LEN: usize = 16;
/// QTYPE+QCLASS, the answers, and an OPT record: everything after the name.
const TAIL_MAX: usize = 4 + MAX_ADDRS * ANSWER_RR_LEN + OPT_RR_LEN;
/// Rounded up to a multiple of 4 for `bpf_csum_diff`.
const TAIL_BUF: usize = (TAIL_MAX + 3) / 4 * 4;

const DNS_TYPE_OPT: u16 = 41;
/// EDNS options walked in a query; a query with more goes to userspace.
const MAX_EDNS_OPTIONS: usize = 8;

#[xdp]
pub fn spartan(ctx: XdpContext) -> u32 {
    count(Counter::Packets);
    match try_answer(&ctx) {
        Ok(()) => {
            count(Counter::Answered);
            xdp_action::XDP_TX
        }
        Err(reason) => {
            count(reason);
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = SPARTAN_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: a per-CPU slot is only touched by this CPU.
        unsafe { *slot += 1 };
    }
}

/// Copies `N` bytes at `offset` of the frame to the stack.
#[inline(always)]
fn load<const N: usize>(ctx: &XdpContext, offset: usize, buf: &mut [u8; N]) -> Result<(), Counter> {
    // The helper checks the bounds against the frame itself.
    let ret =
        unsafe { bpf_xdp_load_bytes(ctx.ctx, offset as u32, buf.as_mut_ptr().cast(), N as u32) };
    if ret == 0 {
        Ok(())
    } else {
        Err(Counter::PassMalformed)
    }
}

#[inline(always)]
fn be16(hi: u8, lo: u8) -> u16 {
    ((hi as u16) << 8) | lo as u16
}

fn try_answer(ctx: &XdpContext) -> Result<(), Counter> {
    let frame_len = ctx.data_end() - ctx.data();

    // Ethernet and IPv4: a short frame cannot be ours; let the stack judge it.
    if frame_len < ETH_LEN {
        return Err(Counter::PassNotIpv4);
    }
    if frame_len < HEADERS_LEN {
        // Too short for a DNS query over UDP/IPv4; classify as best we can.
        let mut eth = [0u8; ETH_LEN];
        load(ctx, 0, &mut eth)?;
        return Err(if eth[12] != 0x08 || eth[13] != 0x00 {
            Counter::PassNotIpv4
        } else {
            Counter::PassMalformed
        });
    }
    let Some(scratch) = SPARTAN_SCRATCH.get_ptr_mut(0) else {
        return Err(Counter::PassBuildFailed);
    };
    // SAFETY: the per-CPU slot belongs to this program run alone.
    let s = unsafe { &mut *scratch };
    let hdr = &mut s.hdr;
    load(ctx, 0, hdr)?;
    if hdr[12] != 0x08 || hdr[13] != 0x00 {
        return Err(Counter::PassNotIpv4);
    }
    let ip = IP_OFF;
    if hdr[ip] >> 4 != 4 {
        return Err(Counter::PassNotIpv4);
    }
    // IHL other than 5 means IP options; MF or a fragment offset means a fragment.
    if hdr[ip] & 0x0f != 5 || (hdr[ip + 6] & 0x3f) != 0 || hdr[ip + 7] != 0 {
        return Err(Counter::PassIpOptionsOrFragment);
    }
    let udp = UDP_OFF;
    if hdr[ip + 9] != 17 || hdr[udp + 2] != 0 || hdr[udp + 3] != 53 {
        return Err(Counter::PassNotUdp53);
    }
    let dst = [hdr[ip + 16], hdr[ip + 17], hdr[ip + 18], hdr[ip + 19]];
    // SAFETY: the value is a plain byte, read only.
    if unsafe { SPARTAN_LISTEN_ADDRS.get(&dst) }.is_none() {
        return Err(Counter::PassNotOurAddress);
    }
    count(Counter::QueriesForUs);

    // IP total length must cover UDP + DNS header and fit in the frame
    // (Ethernet padding after it is allowed); UDP length must match it.
    let ip_total = be16(hdr[ip + 2], hdr[ip + 3]) as usize;
    let udp_total = be16(hdr[udp + 4], hdr[udp + 5]) as usize;
    if ip_total < IPV4_LEN + UDP_LEN + DNS_HEADER_LEN
        || ETH_LEN + ip_total > frame_len
        || udp_total != ip_total - IPV4_LEN
    {
        return Err(Counter::PassMalformed);
    }
    let msg_end = ETH_LEN + ip_total;

    let dns = DNS_OFF;
    let flags_hi = hdr[dns + 2];
    if flags_hi & 0x80 != 0 {
        // QR=1: a response, such as our own answer looping back on `lo`.
        return Err(Counter::PassResponse);
    }
    // OPCODE must be QUERY and TC clear.
    if flags_hi & 0x7a != 0 {
        return Err(Counter::PassMalformed);
    }
    let qdcount = be16(hdr[dns + 4], hdr[dns + 5]);
    let ancount = be16(hdr[dns + 6], hdr[dns + 7]);
    let nscount = be16(hdr[dns + 8], hdr[dns + 9]);
    let arcount = be16(hdr[dns + 10], hdr[dns + 11]);
    if qdcount != 1 || ancount != 0 || nscount != 0 || arcount > 1 {
        return Err(Counter::PassMalformed);
    }

    // The question name, copied to the scratch buffer in one helper call. A
    // name shorter than `want` leaves the question's type and class after
    // it; nothing past `want` is ever read.
    let raw = &mut s.raw;
    let name_room = msg_end - QNAME_OFF;
    let mut want = MAX_NAME_LEN;
    if name_room < want {
        want = name_room;
    }
    if !load_name(ctx, want, raw) {
        return Err(Counter::PassMalformed);
    }
    // Walk the labels, hopping from length byte to length byte (a label is
    // at least two bytes, so MAX_NAME_LEN / 2 hops reach any name that fits).
    put(&mut s.next_label, 0);
    put(&mut s.name_len, 0);
    let mut hop = 0;
    while hop < MAX_NAME_LEN / 2 {
        let at = get(&s.next_label);
        if at >= want || at >= MAX_NAME_LEN {
            // The message ended inside the name (truncated), or the name is
            // longer than the kernel handles (userspace answers it).
            return Err(if want < MAX_NAME_LEN {
                Counter::PassMalformed
            } else {
                Counter::PassNameNotInMap
            });
        }
        let len = raw[at];
        if len == 0 {
            put(&mut s.name_len, at + 1);
            break;
        }
        // 0b11 is a compression pointer, 0b01/0b10 are extended label
        // types: none belongs in a query's question.
        if len & 0xc0 != 0 {
            return Err(Counter::PassMalformed);
        }
        put(&mut s.next_label, at + 1 + len as usize);
        hop += 1;
    }
    let name_len = get(&s.name_len);
    if name_len == 0 || name_len > MAX_NAME_LEN {
        return Err(Counter::PassNameNotInMap);
    }
    // The map key is the name lower-cased (length bytes, 1..=63, are below
    // 'A' and stay as they are), zero padded; the bytes after the name are
    // zeroed in `raw` too, so that the checksum below sums the name alone.
    let key = &mut s.key;
    key.qtype = QTYPE_A;
    key.pad = 0;
    let mut i = 0usize;
    while i < MAX_NAME_LEN {
        let b = if i < name_len { raw[i] } else { 0 };
        raw[i] = b;
        key.name[i] = b.to_ascii_lowercase();
        i += 1;
    }

    let q_fixed = QNAME_OFF + name_len;
    let question_end = q_fixed + 4;
    if question_end > msg_end {
        return Err(Counter::PassMalformed);
    }
    let mut qfix = [0u8; 4];
    load(ctx, q_fixed, &mut qfix)?;
    let qtype = be16(qfix[0], qfix[1]);
    let qclass = be16(qfix[2], qfix[3]);
    if qtype != QTYPE_A || qclass != 1 {
        return Err(Counter::PassNotAIn);
    }

    // EDNS: the one additional record must be an OPT of version 0 that ends
    // the message exactly.
    let mut do_bit = false;
    if arcount == 1 {
        if question_end + OPT_RR_LEN > msg_end {
            return Err(Counter::PassMalformed);
        }
        let mut opt = [0u8; OPT_RR_LEN];
        load(ctx, question_end, &mut opt)?;
        if opt[0] != 0 || be16(opt[1], opt[2]) != DNS_TYPE_OPT {
            return Err(Counter::PassUnsupportedEdns);
        }
        if opt[6] != 0 {
            return Err(Counter::PassUnsupportedEdns);
        }
        let rdlen = be16(opt[9], opt[10]) as usize;
        if question_end + OPT_RR_LEN + rdlen != msg_end {
            return Err(Counter::PassMalformed);
        }
        do_bit = opt[7] & 0x80 != 0;
        check_edns_options(ctx, &mut s.opt_at, question_end + OPT_RR_LEN, msg_end)?;
    } else if question_end != msg_end {
        // Trailing bytes inside the UDP payload: not a query shape we answer.
        return Err(Counter::PassMalformed);
    }

    // SAFETY: the value is copied out at once; userspace replaces entries
    // whole, so a concurrent update yields the old or the new value.
    let value: AnswerValue = match unsafe { SPARTAN_ANSWERS.get(&*key) } {
        Some(v) => *v,
        None => return Err(Counter::PassNameNotInMap),
    };
    if value.flags & ANSWER_NEEDS_HEARTBEAT != 0 && !heartbeat_fresh() {
        return Err(Counter::PassStaleHeartbeat);
    }
    let mut answers = value.count as usize;
    if answers > MAX_ADDRS {
        answers = MAX_ADDRS;
    }
    if answers == 0 {
        return Err(Counter::PassNameNotInMap);
    }

    // Everything after the name: QTYPE/QCLASS, the A records, the OPT.
    // Every byte up to `tail_len` is written below, and the few after it
    // that the 4-byte-aligned checksum reads are zeroed there.
    let tail = &mut s.tail;
    tail[0] = 0;
    tail[1] = 1;
    tail[2] = 0;
    tail[3] = 1;
    let ttl = value.ttl.to_be_bytes();
    let mut a = 0usize;
    while a < MAX_ADDRS {
        if a >= answers {
            break;
        }
        let o = 4 + a * ANSWER_RR_LEN;
        // A pointer to the question name at offset 12 of the message.
        tail[o] = 0xc0;
        tail[o + 1] = 0x0c;
        tail[o + 2] = 0;
        tail[o + 3] = 1; // TYPE A
        tail[o + 4] = 0;
        tail[o + 5] = 1; // CLASS IN
        tail[o + 6] = ttl[0];
        tail[o + 7] = ttl[1];
        tail[o + 8] = ttl[2];
        tail[o + 9] = ttl[3];
        tail[o + 10] = 0;
        tail[o + 11] = 4; // RDLENGTH
        let addr = value.addrs[a];
        tail[o + 12] = addr[0];
        tail[o + 13] = addr[1];
        tail[o + 14] = addr[2];
        tail[o + 15] = addr[3];
        a += 1;
    }
    let mut tail_len = 4 + answers * ANSWER_RR_LEN;
    if arcount == 1 {
        write_opt(tail, tail_len, do_bit);
        tail_len += OPT_RR_LEN;
    }
    if tail_len > TAIL_MAX {
        return Err(Counter::PassBuildFailed);
    }

    let payload_len = DNS_HEADER_LEN + name_len + tail_len;
    let new_frame_len = DNS_OFF + payload_len;
    let delta = new_frame_len as i64 - frame_len as i64;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
        return Err(Counter::PassBuildFailed);
    }

    // From here on the frame is ours: it is rewritten and sent back.
    rewrite_headers(hdr, payload_len, answers, arcount == 1);
    // bpf_csum_diff sums whole 32-bit words: zero the bytes up to the next
    // multiple of four after the tail.
    let tail_sum_len = (tail_len + 3) & !3;
    let mut z = tail_len;
    while z < TAIL_MAX + 3 {
        if z >= tail_sum_len || z >= TAIL_BUF {
            break;
        }
        tail[z] = 0;
        z += 1;
    }
    let udp_sum = udp_checksum(hdr, raw, tail, tail_sum_len, name_len);
    hdr[udp + 6] = (udp_sum >> 8) as u8;
    hdr[udp + 7] = udp_sum as u8;

    let stored_hdr =
        unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, hdr.as_mut_ptr().cast(), HEADERS_LEN as u32) };
    let stored_tail = unsafe {
        bpf_xdp_store_bytes(
            ctx.ctx,
            q_fixed as u32,
            tail.as_mut_ptr().cast(),
            tail_len as u32,
        )
    };
    if stored_hdr != 0 || stored_tail != 0 {
        // The tail was already adjusted: the frame is no longer the query,
        // and the stack will drop it as malformed. Count it; it cannot happen
        // while the bounds above hold.
        return Err(Counter::PassBuildFailed);
    }
    Ok(())
}

/// The OPT record's options must be well-formed TLVs that end exactly at
/// the end of the message. Their contents are ignored (RFC 7873 allows a
/// server to ignore a COOKIE). More options than we walk go to userspace.
#[inline(always)]
fn check_edns_options(
    ctx: &XdpContext,
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
        let mut tlv = [0u8; 4];
        load(ctx, at, &mut tlv)?;
        put(opt_at, at + 4 + be16(tlv[2], tlv[3]) as usize);
        k += 1;
    }
    let end = get(opt_at);
    if end == msg_end {
        Ok(())
    } else if end < msg_end {
        Err(Counter::PassUnsupportedEdns)
    } else {
        Err(Counter::PassMalformed)
    }
}

/// Loads `want` (1..=MAX_NAME_LEN) bytes of the question name.
#[inline(always)]
fn load_name(ctx: &XdpContext, want: usize, raw: &mut [u8; MAX_NAME_LEN]) -> bool {
    if want == 0 || want > MAX_NAME_LEN {
        return false;
    }
    let ret = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            QNAME_OFF as u32,
            raw.as_mut_ptr().cast(),
            want as u32,
        )
    };
    ret == 0
}

fn heartbeat_fresh() -> bool {
    let Some(beat) = SPARTAN_HEARTBEAT.get(0) else {
        return false;
    };
    let beat = *beat;
    let now = unsafe { bpf_ktime_get_ns() };
    // Zero means "never"; a beat from the future is as good as now.
    beat != 0 && now.saturating_sub(beat) <= HEARTBEAT_MAX_AGE_NS
}

/// Appends an OPT record at `at`: root name, UDP size 1232, version 0, the
/// DO bit copied from the query, no options.
#[inline(always)]
fn write_opt(tail: &mut [u8; TAIL_BUF], at: usize, do_bit: bool) {
    // `at` is at most 4 + MAX_ADDRS * 16, so the record fits in the buffer.
    if at + OPT_RR_LEN > TAIL_BUF {
        return;
    }
    let size = EDNS_UDP_SIZE.to_be_bytes();
    tail[at] = 0;
    tail[at + 1] = 0;
    tail[at + 2] = DNS_TYPE_OPT as u8;
    tail[at + 3] = size[0];
    tail[at + 4] = size[1];
    tail[at + 5] = 0; // extended RCODE
    tail[at + 6] = 0; // version
    tail[at + 7] = if do_bit { 0x80 } else { 0 };
    tail[at + 8] = 0;
    tail[at + 9] = 0; // RDLENGTH
    tail[at + 10] = 0;
}

/// Turns the saved headers of the query into those of the answer.
#[inline(always)]
fn rewrite_headers(hdr: &mut [u8; HEADERS_LEN], payload_len: usize, answers: usize, opt: bool) {
    let mut i = 0;
    while i < 6 {
        hdr.swap(i, i + 6);
        i += 1;
    }
    let ip = IP_OFF;
    let ip_total = (IPV4_LEN + UDP_LEN + payload_len) as u16;
    hdr[ip + 2] = (ip_total >> 8) as u8;
    hdr[ip + 3] = ip_total as u8;
    hdr[ip + 8] = 64; // TTL
    let mut k = 0;
    while k < 4 {
        hdr.swap(ip + 12 + k, ip + 16 + k);
        k += 1;
    }
    hdr[ip + 10] = 0;
    hdr[ip + 11] = 0;
    let ip_sum = !checksum::fold(checksum::add_range(0, hdr, ip, IPV4_LEN));
    hdr[ip + 10] = (ip_sum >> 8) as u8;
    hdr[ip + 11] = ip_sum as u8;

    let udp = UDP_OFF;
    hdr.swap(udp, udp + 2);
    hdr.swap(udp + 1, udp + 3);
    let udp_total = (UDP_LEN + payload_len) as u16;
    hdr[udp + 4] = (udp_total >> 8) as u8;
    hdr[udp + 5] = udp_total as u8;
    hdr[udp + 6] = 0;
    hdr[udp + 7] = 0;

    let dns = DNS_OFF;
    // QR=1, OPCODE=0, AA=1, TC=0, RD copied; RA=1, Z/AD/CD=0, RCODE=0.
    hdr[dns + 2] = 0x80 | 0x04 | (hdr[dns + 2] & 0x01);
    hdr[dns + 3] = 0x80;
    hdr[dns + 4] = 0;
    hdr[dns + 5] = 1;
    hdr[dns + 6] = 0;
    hdr[dns + 7] = answers as u8;
    hdr[dns + 8] = 0;
    hdr[dns + 9] = 0;
    hdr[dns + 10] = 0;
    hdr[dns + 11] = opt as u8;
}

/// The UDP checksum of the answer: pseudo-header, UDP header, DNS header,
/// name (client's own bytes) and tail. A result of zero is sent as 0xffff.
#[inline(always)]
fn udp_checksum(
    hdr: &[u8; HEADERS_LEN],
    name: &[u8; MAX_NAME_LEN],
    tail: &[u8; TAIL_BUF],
    tail_sum_len: usize,
    name_len: usize,
) -> u16 {
    let ip = IP_OFF;
    let udp = UDP_OFF;
    // Pseudo-header: addresses, protocol, UDP length; then the UDP header
    // (checksum field zero) and the DNS header.
    let mut sum = checksum::add_range(0, hdr, ip + 12, 8);
    sum += 17;
    sum += ((hdr[udp + 4] as u32) << 8) | hdr[udp + 5] as u32;
    sum = checksum::add_range(sum, hdr, udp, UDP_LEN + DNS_HEADER_LEN);
    // The name starts at message offset 12 (even); the tail follows it.
    sum += checksum::block(name) as u32;
    sum += checksum::at_offset(checksum::prefix(tail, tail_sum_len), name_len % 2 == 1);
    let csum = !checksum::fold(sum);
    if csum == 0 { 0xffff } else { csum }
}
