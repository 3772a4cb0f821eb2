//! What makes an upstream reply ours, and the TCP exchange.
//!
//! A reply counts only when its source, ID and question match what was
//! sent (RFC 5452); anything else is a stray, counted and ignored. Only the
//! header and the question are decoded (with hickory's decoders), not the
//! whole reply.

use std::{io, net::SocketAddr};

use hickory_proto::{
    op::{Header, MessageType, Query},
    serialize::binary::{BinDecodable, BinDecoder},
};
use tokio::{
    net::TcpStream,
    time::{Instant, timeout_at},
};

use crate::framing::{FrameReader, write_frame};

#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("no reply within the timeout")]
    Timeout,
    #[error("network error: {0}")]
    Io(#[from] io::Error),
    #[error("the connection closed without a reply")]
    Closed,
}

/// Does `reply` (whose header is `header`) answer `question` with `id`?
pub fn matches(reply: &[u8], header: &Header, id: u16, question: &Query) -> bool {
    if header.id() != id || header.message_type() != MessageType::Response {
        return false;
    }
    if header.query_count() == 0 {
        // A truncated reply may carry no question at all; the ID matched.
        return header.truncated();
    }
    let mut decoder = BinDecoder::new(reply);
    if decoder.read_slice(12).is_err() {
        return false;
    }
    match Query::read(&mut decoder) {
        // Name equality is case-insensitive: an upstream may echo 0x20.
        Ok(q) => {
            q.name() == question.name()
                && q.query_type() == question.query_type()
                && q.query_class() == question.query_class()
        }
        Err(_) => false,
    }
}

/// Sends `query` (its ID already set) to `upstream` over one TCP
/// connection and reads one reply, until `deadline`.
pub async fn tcp(
    upstream: SocketAddr,
    query: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, ExchangeError> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream).await?;
        stream.set_nodelay(true)?;
        write_frame(&mut stream, query).await?;
        FrameReader::new()
            .read(&mut stream)
            .await?
            .ok_or(ExchangeError::Closed)
    };
    timeout_at(deadline, exchange)
        .await
        .map_err(|_| ExchangeError::Timeout)?
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::{DNSClass, Name, RecordType},
    };

    use super::*;

    fn question() -> Query {
        Query::query(Name::from_ascii("www.example.net.").unwrap(), RecordType::A)
    }

    fn reply(id: u16, q: Option<Query>, response: bool, truncated: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(if response {
                MessageType::Response
            } else {
                MessageType::Query
            })
            .set_truncated(truncated)
            .set_response_code(ResponseCode::NoError);
        if let Some(q) = q {
            m.add_query(q);
        }
        m.to_vec().unwrap()
    }

    fn check(wire: &[u8], id: u16) -> bool {
        let header = crate::message::header(wire).unwrap();
        matches(wire, &header, id, &question())
    }

    #[test]
    fn the_right_reply_matches_in_any_case() {
        assert!(check(&reply(7, Some(question()), true, false), 7));
        let upper = Query::query(Name::from_ascii("WWW.Example.NET.").unwrap(), RecordType::A);
        assert!(check(&reply(7, Some(upper), true, false), 7));
    }

    #[test]
    fn wrong_id_qr_name_type_or_class_do_not_match() {
        assert!(!check(&reply(8, Some(question()), true, false), 7), "id");
        assert!(!check(&reply(7, Some(question()), false, false), 7), "QR");
        let other = Query::query(
            Name::from_ascii("evil.example.net.").unwrap(),
            RecordType::A,
        );
        assert!(!check(&reply(7, Some(other), true, false), 7), "name");
        let aaaa = Query::query(question().name().clone(), RecordType::AAAA);
        assert!(!check(&reply(7, Some(aaaa), true, false), 7), "type");
        let mut chaos = question();
        chaos.set_query_class(DNSClass::CH);
        assert!(!check(&reply(7, Some(chaos), true, false), 7), "class");
    }

    #[test]
    fn a_questionless_reply_matches_only_when_truncated() {
        assert!(check(&reply(7, None, true, true), 7));
        assert!(!check(&reply(7, None, true, false), 7));
    }

    #[test]
    fn a_reply_cut_inside_its_question_does_not_match() {
        let wire = reply(7, Some(question()), true, false);
        assert!(!check(&wire[..20], 7));
    }
}
