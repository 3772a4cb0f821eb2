//! A stored answer: everything of a reply but the parts that come from the
//! query (ID, RD, CD, the question, the OPT), with the place of each TTL.
//! The daemon renders it for a client here; the kernel renders the same
//! bytes from [`CachedAnswer::kernel_value`], so the two never disagree.

use hickory_proto::{
    op::{Header, Message, MessageType, ResponseCode},
    rr::{Name, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use spartan_common::{AnswerKey, AnswerValue, EDNS_UDP_SIZE, MAX_TTLS, SECTIONS_MAX};

use super::key::Asked;

/// Whether the TTLs of an answer are aged (cache entries: the fields are
/// stored as zeros and written when the answer is rendered) or fixed (the
/// local names: the fields keep their values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttls {
    Aged,
    Fixed,
}

/// Why a reply cannot be stored as it is.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unstorable {
    #[error("the reply does not parse as records")]
    Malformed,
    #[error("the OPT record is not the last record")]
    OptNotLast,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAnswer {
    /// The reply's header: QR, opcode, AA, RA, AD, RCODE and the section
    /// counts kept (the additional count without the OPT); ID, RD, TC and
    /// CD cleared (they come from the query, and a truncated reply is never
    /// stored); one question.
    pub header: Header,
    /// Answer, authority and additional records as received (no OPT).
    pub sections: Vec<u8>,
    /// Offsets of the TTL fields in `sections`.
    pub ttl_at: Vec<u16>,
    pub ttls: Ttls,
    /// The smallest TTL of the records as received (0 when there are none).
    pub min_ttl: u32,
}

/// OPT owner (root), TYPE, CLASS (UDP size), TTL (ext. RCODE, version,
/// DO+Z), RDLENGTH.
const OPT_LEN: usize = 11;

impl CachedAnswer {
    /// Reads `reply` (one question, then records) into an answer.
    pub fn from_reply(reply: &[u8], ttls: Ttls) -> Result<Self, Unstorable> {
        let mut d = BinDecoder::new(reply);
        let mut header = Header::read(&mut d).map_err(bad)?;
        if header.query_count() != 1 {
            return Err(Unstorable::Malformed);
        }
        Name::read(&mut d).map_err(bad)?;
        d.read_slice(4).map_err(bad)?;
        let start = d.index();
        let mut end = reply.len();
        let mut ttl_at = Vec::new();
        let mut min_ttl: Option<u32> = None;
        let total = header.answer_count() as usize
            + header.name_server_count() as usize
            + header.additional_count() as usize;
        for i in 0..total {
            let record = d.index();
            Name::read(&mut d).map_err(bad)?;
            let rtype = d.read_u16().map_err(bad)?.unverified();
            d.read_u16().map_err(bad)?;
            let ttl = d.index();
            let value = d.read_u32().map_err(bad)?.unverified();
            let rdlength = d.read_u16().map_err(bad)?.unverified();
            d.read_slice(rdlength as usize).map_err(bad)?;
            if rtype == u16::from(RecordType::OPT) {
                if i + 1 != total {
                    return Err(Unstorable::OptNotLast);
                }
                end = record;
                header.set_additional_count(header.additional_count() - 1);
                break;
            }
            ttl_at.push((ttl - start) as u16);
            min_ttl = Some(min_ttl.map_or(value, |m: u32| m.min(value)));
            end = d.index();
        }
        let mut sections = reply[start..end].to_vec();
        if ttls == Ttls::Aged {
            for &at in &ttl_at {
                sections[at as usize..at as usize + 4].fill(0);
            }
        }
        header
            .set_id(0)
            .set_recursion_desired(false)
            .set_truncated(false)
            .set_checking_disabled(false);
        Ok(Self {
            header,
            sections,
            ttl_at,
            ttls,
            min_ttl: min_ttl.unwrap_or(0),
        })
    }

    /// An answer without records: `rcode`, RA set, and TC when `truncated`
    /// (so that the client asks again over TCP).
    pub fn bare(rcode: ResponseCode, truncated: bool) -> Self {
        let mut header = Header::new();
        header
            .set_message_type(MessageType::Response)
            .set_recursion_available(true)
            .set_truncated(truncated)
            .set_response_code(rcode)
            .set_query_count(1);
        Self {
            header,
            sections: Vec::new(),
            ttl_at: Vec::new(),
            ttls: Ttls::Fixed,
            min_ttl: 0,
        }
    }

    /// Bytes this answer holds, for the cache's byte budget.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.sections.len() + 2 * self.ttl_at.len()
    }

    /// The RCODE.
    pub fn rcode(&self) -> ResponseCode {
        self.header.response_code()
    }

    /// The header for `asked`: its ID, RD and CD, one more additional
    /// record when an OPT is added.
    fn header_for(&self, asked: &Asked) -> Header {
        let mut header = self.header;
        header
            .set_id(asked.id)
            .set_recursion_desired(asked.rd)
            .set_checking_disabled(asked.cd)
            .set_additional_count(self.header.additional_count() + u16::from(asked.edns.is_some()));
        header
    }

    /// The reply for `asked` with every TTL `ttl` (aged answers), or
    /// `None` when it is larger than the client takes over UDP.
    pub fn render(&self, asked: &Asked, ttl: u32) -> Option<Vec<u8>> {
        let opt = if asked.edns.is_some() { OPT_LEN } else { 0 };
        let len = 12 + asked.question.len() + self.sections.len() + opt;
        if asked.max_udp.is_some_and(|max| len > max) {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&header_bytes(&self.header_for(asked)));
        out.extend_from_slice(&asked.question);
        let sections = out.len();
        out.extend_from_slice(&self.sections);
        if self.ttls == Ttls::Aged {
            for &at in &self.ttl_at {
                let at = sections + at as usize;
                out[at..at + 4].copy_from_slice(&ttl.to_be_bytes());
            }
        }
        if let Some(dnssec_ok) = asked.edns {
            out.extend_from_slice(&opt_record(dnssec_ok));
        }
        Some(out)
    }

    /// The kernel map's value, stored with `ttl` seconds and expiring at
    /// `expires_ns` (CLOCK_MONOTONIC; 0 for a fixed answer); `None` when the
    /// answer does not fit.
    pub fn kernel_value(&self, expires_ns: u64, ttl: u32) -> Option<AnswerValue> {
        if self.sections.len() > SECTIONS_MAX || self.ttl_at.len() > MAX_TTLS {
            return None;
        }
        let mut v = AnswerValue::zeroed();
        v.expires_ns = expires_ns;
        v.ttl_s = ttl;
        let header = header_bytes(&self.header);
        v.header_flags = u16::from_be_bytes([header[2], header[3]]);
        v.ancount = self.header.answer_count();
        v.nscount = self.header.name_server_count();
        v.arcount = self.header.additional_count();
        v.sections_len = self.sections.len() as u16;
        v.sections[..self.sections.len()].copy_from_slice(&self.sections);
        v.sections_sum = ones_complement_sum(&self.sections);
        if self.ttls == Ttls::Aged {
            v.ttl_count = self.ttl_at.len() as u16;
            for (slot, at) in v.ttl_at.iter_mut().zip(&self.ttl_at) {
                *slot = *at;
                v.ttl_parity[(*at % 2) as usize] += 1;
            }
        }
        Some(v)
    }
}

/// The message a kernel entry answers with, for a client that asked its key
/// without EDNS (TTLs as stored: zero for a cache entry), for display and
/// for reading the local names back.
pub fn kernel_message(key: &AnswerKey, v: &AnswerValue) -> Option<Message> {
    let name_len = match key.name_len() {
        0 => return None,
        n => n,
    };
    let sections = v.sections.get(..v.sections_len as usize)?;
    let mut wire = Vec::with_capacity(16 + name_len + sections.len());
    wire.extend_from_slice(&[0, 0]);
    for field in [v.header_flags, 1, v.ancount, v.nscount, v.arcount] {
        wire.extend_from_slice(&field.to_be_bytes());
    }
    wire.extend_from_slice(&key.name[..name_len]);
    wire.extend_from_slice(&key.qtype.to_be_bytes());
    wire.extend_from_slice(&key.qclass.to_be_bytes());
    wire.extend_from_slice(sections);
    Message::from_vec(&wire).ok()
}

/// `header` in wire format.
fn header_bytes(header: &Header) -> [u8; 12] {
    let mut out = Vec::with_capacity(12);
    header
        .emit(&mut BinEncoder::new(&mut out))
        .expect("a header always encodes");
    out.try_into().expect("a header is 12 bytes")
}

fn bad<E>(_: E) -> Unstorable {
    Unstorable::Malformed
}

/// Spartan's OPT record: UDP size 1232, version 0, DO as asked, no options.
pub fn opt_record(dnssec_ok: bool) -> [u8; OPT_LEN] {
    let size = EDNS_UDP_SIZE.to_be_bytes();
    let dnssec = if dnssec_ok { 0x80 } else { 0 };
    [0, 0, 41, size[0], size[1], 0, 0, dnssec, 0, 0, 0]
}

/// RFC 1071 sum of `data` as big-endian words from an even offset, folded.
fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::{Edns, MessageType, Query, ResponseCode},
        rr::{DNSClass, RData, Record, rdata::A},
    };

    use super::*;
    use crate::message::Transport;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn reply(edns: bool) -> Message {
        let mut m = Message::new();
        m.set_id(5)
            .set_message_type(MessageType::Response)
            .set_recursion_desired(true)
            .set_recursion_available(true)
            .set_authoritative(true)
            .add_query(Query::query(name("web.example."), RecordType::A));
        for i in 1..=3 {
            m.add_answer(Record::from_rdata(
                name("web.example."),
                300,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        if edns {
            m.set_edns(Edns::new());
        }
        m
    }

    fn asked(query_name: &str, id: u16, edns: Option<bool>) -> Asked {
        let mut q = Message::new();
        q.set_id(id)
            .add_query(Query::query(name(query_name), RecordType::A));
        if let Some(d) = edns {
            let mut e = Edns::new();
            e.set_dnssec_ok(d).set_max_payload(4096);
            q.set_edns(e);
        }
        Asked::new(&q.to_vec().unwrap(), &q, Transport::Udp).unwrap()
    }

    #[test]
    fn stores_records_without_opt_and_zeroes_ttls() {
        let answer = CachedAnswer::from_reply(&reply(true).to_vec().unwrap(), Ttls::Aged).unwrap();
        let h = answer.header;
        assert_eq!(
            (
                h.answer_count(),
                h.name_server_count(),
                h.additional_count()
            ),
            (3, 0, 0)
        );
        assert_eq!(answer.ttl_at.len(), 3);
        for &at in &answer.ttl_at {
            assert_eq!(&answer.sections[at as usize..at as usize + 4], &[0; 4]);
        }
        assert!(!h.recursion_desired() && !h.truncated() && !h.checking_disabled());
        assert_eq!(h.id(), 0);
    }

    #[test]
    fn renders_with_the_clients_id_case_ttl_and_opt() {
        let answer = CachedAnswer::from_reply(&reply(false).to_vec().unwrap(), Ttls::Aged).unwrap();
        let asked = asked("WEB.example.", 4321, Some(true));
        let wire = answer.render(&asked, 42).unwrap();
        let m = Message::from_vec(&wire).unwrap();
        assert_eq!(m.id(), 4321);
        assert!(!m.recursion_desired());
        assert!(m.authoritative());
        assert_eq!(m.queries()[0].name().to_ascii(), "WEB.example.");
        assert_eq!(m.queries()[0].query_class(), DNSClass::IN);
        assert_eq!(m.answers().len(), 3);
        assert!(m.answers().iter().all(|r| r.ttl() == 42));
        // Compression pointers land on the client's own name bytes.
        assert_eq!(m.answers()[0].name().to_ascii(), "WEB.example.");
        let edns = m.extensions().as_ref().unwrap();
        assert!(edns.flags().dnssec_ok);
        assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
        assert_eq!(m.response_code(), ResponseCode::NoError);
    }

    #[test]
    fn too_large_for_the_client_is_not_rendered() {
        let mut big = reply(false);
        for i in 0..40 {
            big.add_answer(Record::from_rdata(
                name("web.example."),
                300,
                RData::A(A(Ipv4Addr::new(10, 1, 0, i))),
            ));
        }
        let answer = CachedAnswer::from_reply(&big.to_vec().unwrap(), Ttls::Aged).unwrap();
        assert!(answer.render(&asked("web.example.", 1, None), 5).is_none());
        assert!(
            answer
                .render(&asked("web.example.", 1, Some(false)), 5)
                .is_some()
        );
        // Too many TTLs for the kernel.
        assert!(answer.kernel_value(1, 1).is_none());
    }

    #[test]
    fn bare_answers_carry_the_question_and_flags() {
        let asked = asked("X.example.", 9, Some(false));
        let m = Message::from_vec(
            &CachedAnswer::bare(ResponseCode::ServFail, true)
                .render(&asked, 0)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (m.id(), m.response_code(), m.truncated()),
            (9, ResponseCode::ServFail, true)
        );
        assert!(m.recursion_available());
        assert_eq!(m.queries()[0].name().to_ascii(), "X.example.");
        assert!(m.extensions().is_some());
    }

    #[test]
    fn kernel_value_sums_and_counts() {
        let answer = CachedAnswer::from_reply(&reply(false).to_vec().unwrap(), Ttls::Aged).unwrap();
        let v = answer.kernel_value(99, 1).unwrap();
        assert_eq!(v.sections_len as usize, answer.sections.len());
        assert_eq!(v.ttl_count, 3);
        assert_eq!(v.ttl_parity[0] + v.ttl_parity[1], 3);
        assert_eq!(v.sections_sum, ones_complement_sum(&answer.sections));
        let fixed = CachedAnswer::from_reply(&reply(false).to_vec().unwrap(), Ttls::Fixed).unwrap();
        assert_eq!(fixed.kernel_value(0, 0).unwrap().ttl_count, 0);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(
            CachedAnswer::from_reply(&[0; 11], Ttls::Aged),
            Err(Unstorable::Malformed)
        );
        let mut wire = reply(false).to_vec().unwrap();
        wire.truncate(wire.len() - 2);
        assert_eq!(
            CachedAnswer::from_reply(&wire, Ttls::Aged),
            Err(Unstorable::Malformed)
        );
    }
}
