//! What a query asks, as the cache sees it: the key (lower-cased name,
//! type, class, DO and CD) and the bits of the query an answer keeps (ID,
//! RD, CD, the question bytes as sent, EDNS).

use hickory_proto::{
    op::Message,
    rr::Name,
    serialize::binary::{BinDecodable, BinDecoder},
};
use spartan_common::{AnswerKey, KEY_CD, KEY_DO, MAX_NAME_LEN};

use crate::message::{self, Transport};

/// The cache key: the same fields in userspace and in the kernel map.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Wire-format name, ASCII lower-cased.
    pub name: Box<[u8]>,
    pub qtype: u16,
    pub qclass: u16,
    /// `KEY_DO` | `KEY_CD`.
    pub flags: u16,
}

impl CacheKey {
    /// The kernel map's key; `None` for a name longer than the kernel takes.
    pub fn kernel(&self) -> Option<AnswerKey> {
        if self.name.len() > MAX_NAME_LEN {
            return None;
        }
        let mut key = AnswerKey::zeroed();
        key.name[..self.name.len()].copy_from_slice(&self.name);
        key.qtype = self.qtype;
        key.qclass = self.qclass;
        key.flags = self.flags;
        Some(key)
    }

    /// The name, decoded from the key's wire bytes.
    pub fn decoded_name(&self) -> Option<Name> {
        Name::read(&mut BinDecoder::new(&self.name)).ok()
    }

    /// The name as text (`www.example.com.`).
    pub fn name_text(&self) -> String {
        self.decoded_name()
            .map_or_else(|| "?".into(), |n| n.to_ascii())
    }
}

/// A query the cache can answer: its key and what its answer must echo.
#[derive(Clone, Debug)]
pub struct Asked {
    pub key: CacheKey,
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    /// `Some(do)` when the query had an OPT record.
    pub edns: Option<bool>,
    /// The question as the client sent it (0x20 case kept).
    pub question: Box<[u8]>,
    /// Largest reply the client takes; `None` over TCP.
    pub max_udp: Option<usize>,
    pub transport: Transport,
}

impl Asked {
    /// `None` for a query the cache leaves alone (a compressed question).
    pub fn new(wire: &[u8], query: &Message, transport: Transport) -> Option<Self> {
        let q = query.queries().first()?;
        let mut d = BinDecoder::new(wire);
        d.read_slice(12).ok()?;
        Name::read(&mut d).ok()?;
        let name_end = d.index();
        // A name written out in full takes exactly its encoded length (a
        // pointer in a question is not worth caching): labels, one length
        // byte each, and the root.
        let encoded = if q.name().is_root() {
            1
        } else {
            q.name().len() + 1
        };
        if encoded != name_end - 12 {
            return None;
        }
        let question = wire.get(12..name_end + 4)?;
        let edns = query.extensions().as_ref().map(|e| e.flags().dnssec_ok);
        let cd = query.checking_disabled();
        let flags = if edns == Some(true) { KEY_DO } else { 0 } | if cd { KEY_CD } else { 0 };
        Some(Self {
            key: CacheKey {
                name: wire[12..name_end].to_ascii_lowercase().into(),
                qtype: u16::from(q.query_type()),
                qclass: u16::from(q.query_class()),
                flags,
            },
            id: query.id(),
            rd: query.recursion_desired(),
            cd,
            edns,
            question: question.into(),
            max_udp: (transport == Transport::Udp).then(|| message::max_udp_reply(query)),
            transport,
        })
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Edns, Query},
        rr::RecordType,
    };

    use super::*;

    fn query(name: &str, dnssec_ok: Option<bool>, cd: bool) -> (Vec<u8>, Message) {
        let mut m = Message::new();
        m.set_id(77)
            .set_checking_disabled(cd)
            .add_query(Query::query(
                Name::from_ascii(name).unwrap(),
                RecordType::AAAA,
            ));
        if let Some(d) = dnssec_ok {
            let mut e = Edns::new();
            e.set_dnssec_ok(d);
            m.set_edns(e);
        }
        (m.to_vec().unwrap(), m)
    }

    #[test]
    fn key_is_lowercase_and_question_keeps_case() {
        let (wire, m) = query("WwW.ExAmple.COM.", None, false);
        let a = Asked::new(&wire, &m, Transport::Udp).unwrap();
        assert_eq!(&*a.key.name, b"\x03www\x07example\x03com\x00");
        assert_eq!(a.key.qtype, 28);
        assert_eq!(a.key.qclass, 1);
        assert_eq!(&a.question[1..4], b"WwW");
        assert_eq!(a.question.len(), 17 + 4);
        assert_eq!(a.key.name_text(), "www.example.com.");
        assert_eq!(a.max_udp, Some(512));
    }

    #[test]
    fn do_and_cd_make_different_keys() {
        let plain = query("a.b.", None, false);
        let edns = query("a.b.", Some(false), false);
        let dnssec = query("a.b.", Some(true), false);
        let cd = query("a.b.", None, true);
        let key = |(w, m): &(Vec<u8>, Message)| Asked::new(w, m, Transport::Tcp).unwrap().key;
        assert_eq!(key(&plain), key(&edns));
        assert_eq!(key(&dnssec).flags, KEY_DO);
        assert_eq!(key(&cd).flags, KEY_CD);
        assert_ne!(key(&plain), key(&dnssec));
    }

    #[test]
    fn long_names_have_no_kernel_key() {
        let long = format!("{}.example.", "a".repeat(60));
        let longer = format!("{0}.{0}.example.", "a".repeat(60));
        let (w, m) = query(&long, None, false);
        assert!(
            Asked::new(&w, &m, Transport::Udp)
                .unwrap()
                .key
                .kernel()
                .is_some()
        );
        let (w, m) = query(&longer, None, false);
        assert!(
            Asked::new(&w, &m, Transport::Udp)
                .unwrap()
                .key
                .kernel()
                .is_none()
        );
    }
}
