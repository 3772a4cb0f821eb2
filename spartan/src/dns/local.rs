//! Responses built by Spartan itself: local zone answers and errors.

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};

use crate::message::{CLASSIC_UDP_SIZE, our_edns, response_to};

/// The reply to a query whose EDNS version we do not speak.
pub fn badvers(query: &Message) -> Message {
    let mut m = response_to(query, ResponseCode::BADVERS);
    m.set_edns(our_edns(false));
    m
}

/// The reply to an opcode we do not implement: NOTIMP with the question
/// and no flags besides QR and the opcode (no RA, RD, CD or AD), as BIND
/// and Unbound answer.
pub fn notimp(query: &Message) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_response_code(ResponseCode::NotImp);
    m.add_queries(query.queries().iter().cloned());
    m
}

/// An error reply made from the 12-byte header alone (the rest of the
/// query did not parse). `None` when there is not even a header.
pub fn error_from_header(wire: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    if wire.len() < 12 || wire[2] & 0x80 != 0 {
        return None;
    }
    let mut m = Message::new();
    m.set_id(u16::from_be_bytes([wire[0], wire[1]]))
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::from_u8((wire[2] >> 3) & 0x0f))
        .set_recursion_desired(wire[2] & 0x01 != 0)
        .set_recursion_available(true)
        .set_response_code(rcode);
    m.to_vec().ok()
}

pub use crate::zone::local_reply as local_answer;

/// Encodes `m` for the client; over UDP a reply larger than the client
/// accepts is cut to its header and question with TC set.
pub fn encode(query: &Message, mut m: Message, udp: bool) -> Option<Vec<u8>> {
    let wire = m.to_vec().ok()?;
    if !udp {
        return Some(wire);
    }
    let limit = query.extensions().as_ref().map_or(CLASSIC_UDP_SIZE, |e| {
        (e.max_payload() as usize).max(CLASSIC_UDP_SIZE)
    });
    if wire.len() <= limit {
        return Some(wire);
    }
    m.take_answers();
    m.take_name_servers();
    m.take_additionals();
    m.set_truncated(true);
    m.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::{
        op::{Message, Query},
        rr::{Name, RData, Record, RecordType, rdata::A},
    };

    use super::*;
    use crate::zone::LocalAnswer;
    use hickory_proto::op::Edns;

    fn query(edns_size: Option<u16>) -> Message {
        let mut q = Message::new();
        q.set_id(9).add_query(Query::query(
            Name::from_ascii("x.spartan.").unwrap(),
            RecordType::A,
        ));
        if let Some(size) = edns_size {
            let mut e = Edns::new();
            e.set_max_payload(size);
            q.set_edns(e);
        }
        q
    }

    fn big_answer(q: &Message) -> Message {
        let mut records = Vec::new();
        for i in 0..100u8 {
            let name = Name::from_ascii("x.spartan.").unwrap();
            records.push(Record::from_rdata(
                name,
                5,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        local_answer(q, LocalAnswer::Records(records))
    }

    #[test]
    fn a_local_answer_too_large_for_the_client_is_truncated() {
        for size in [None, Some(1232)] {
            let q = query(size);
            let wire = encode(&q, big_answer(&q), true).unwrap();
            let m = Message::from_vec(&wire).unwrap();
            assert!(m.truncated());
            assert!(m.answers().is_empty());
            assert_eq!(m.queries(), q.queries());
            assert_eq!(m.extensions().is_some(), size.is_some(), "OPT kept");
            // Over TCP nothing is cut.
            let full = Message::from_vec(&encode(&q, big_answer(&q), false).unwrap()).unwrap();
            assert_eq!(full.answers().len(), 100);
        }
        // A client that takes 4096 bytes gets all 100 records (1.6 KB).
        let q = query(Some(4096));
        let m = Message::from_vec(&encode(&q, big_answer(&q), true).unwrap()).unwrap();
        assert!(!m.truncated());
    }

    #[test]
    fn our_opt_says_1232_and_copies_do() {
        let mut q = query(Some(4096));
        q.extensions_mut().as_mut().unwrap().set_dnssec_ok(true);
        let m = response_to(&q, ResponseCode::NoError);
        let e = m.extensions().as_ref().unwrap();
        assert_eq!(
            (e.max_payload(), e.version(), e.flags().dnssec_ok),
            (1232, 0, true)
        );
    }
}
