//! DNS message helpers shared by the front end and the forwarder: the
//! transport a query came over, response skeletons, the SERVFAIL and TC
//! replies Spartan makes, and the few header fields read on the hot path
//! without a full parse.

use hickory_proto::{
    op::{Edns, Header, Message, MessageType, ResponseCode},
    serialize::binary::{BinDecodable, BinDecoder},
};
use spartan_common::EDNS_UDP_SIZE;

/// Largest UDP reply a client without EDNS accepts.
pub const CLASSIC_UDP_SIZE: usize = 512;

/// How a query arrived; a TCP query is forwarded over TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The header of `wire`, if it has one.
pub fn header(wire: &[u8]) -> Option<Header> {
    Header::read(&mut BinDecoder::new(wire.get(..12)?)).ok()
}

/// The RCODE in a reply's header (EDNS extended codes are not looked at on
/// this path); FORMERR for something too short to be a reply.
pub fn rcode(wire: &[u8]) -> ResponseCode {
    header(wire).map_or(ResponseCode::FormErr, |h| h.response_code())
}

/// `wire` with its ID replaced, in place.
pub fn set_id(wire: &mut [u8], id: u16) {
    wire[..2].copy_from_slice(&id.to_be_bytes());
}

/// The largest UDP reply a query allows: its EDNS UDP size, at least 512.
pub fn max_udp_reply(query: &Message) -> usize {
    query
        .extensions()
        .as_ref()
        .map_or(CLASSIC_UDP_SIZE, |e| e.max_payload() as usize)
        .clamp(CLASSIC_UDP_SIZE, 65_535)
}

/// Our OPT record: UDP size 1232, version 0, DO as asked.
pub fn our_edns(dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_UDP_SIZE)
        .set_version(0)
        .set_dnssec_ok(dnssec_ok);
    edns
}

/// A response skeleton for `query`: same ID, opcode, RD, CD and question;
/// RA set; our OPT when the query had one.
pub fn response_to(query: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(query.checking_disabled())
        .set_response_code(rcode);
    m.add_queries(query.queries().iter().cloned());
    if let Some(edns) = query.extensions() {
        m.set_edns(our_edns(edns.flags().dnssec_ok));
    }
    m
}

/// A real SERVFAIL for `query`: QR set, its ID and question, RA set.
pub fn servfail(query: &Message) -> Vec<u8> {
    response_to(query, ResponseCode::ServFail)
        .to_vec()
        .unwrap_or_default()
}

/// A truncated reply for `query` with `rcode`: header and question, TC set,
/// so that the client retries over TCP.
pub fn truncated(query: &Message, rcode: ResponseCode) -> Vec<u8> {
    let mut m = response_to(query, rcode);
    m.set_truncated(true);
    m.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Query,
        rr::{Name, RecordType},
    };

    use super::*;

    fn query() -> Message {
        let mut q = Message::new();
        q.set_id(4242)
            .set_recursion_desired(true)
            .add_query(Query::query(
                Name::from_ascii("a.example.").unwrap(),
                RecordType::A,
            ));
        q
    }

    #[test]
    fn servfail_is_a_real_response() {
        let m = Message::from_vec(&servfail(&query())).unwrap();
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!((m.id(), m.response_code()), (4242, ResponseCode::ServFail));
        assert!(m.recursion_available() && m.recursion_desired());
        assert_eq!(m.queries(), query().queries());
    }

    #[test]
    fn truncated_keeps_the_question_and_sets_tc() {
        let wire = truncated(&query(), ResponseCode::NoError);
        let m = Message::from_vec(&wire).unwrap();
        assert!(m.truncated());
        assert!(m.answers().is_empty());
        assert_eq!(rcode(&wire), ResponseCode::NoError);
        assert_eq!(header(&wire).unwrap().id(), 4242);
    }
}
