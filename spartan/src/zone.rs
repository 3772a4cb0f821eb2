//! The local zones `spartan` and `zk`: the one model that both the daemon's
//! answers and the kernel's answers map are derived from.

use std::{collections::BTreeMap, net::Ipv4Addr};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{
        LowerName, Name, RData, Record, RecordType,
        rdata::{A, NS, SOA},
    },
    serialize::binary::BinEncodable,
};
use spartan_common::{
    ANSWER_NEEDS_HEARTBEAT, AnswerKey, AnswerValue, KEY_CD, KEY_DO, MAX_NAME_LEN,
};

use crate::{
    cache::{Asked, CachedAnswer, Ttls},
    message::Transport,
};

/// Number of `zk-N.zk` names.
pub const ZK_NAMES: usize = 5;
/// TTL of every A record in the local zones.
const A_TTL: u32 = 5;
const NS_TTL: u32 = 3600;
/// The `zk` SOA serial of the first master list (the original's).
pub const ZK_FIRST_SERIAL: u32 = 1;
/// The answer watchdogs check for.
pub const READY_ADDR: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("static name is valid")
}

/// One authoritative zone: its SOA and its records by owner name.
#[derive(Clone, Debug)]
pub struct Zone {
    origin: LowerName,
    soa: Record,
    records: BTreeMap<LowerName, Vec<Record>>,
}

impl Zone {
    fn new(origin: Name, soa: SOA, soa_ttl: u32) -> Self {
        Self {
            origin: LowerName::new(&origin),
            soa: Record::from_rdata(origin, soa_ttl, RData::SOA(soa)),
            records: BTreeMap::new(),
        }
    }

    fn add(&mut self, record: Record) {
        self.records
            .entry(LowerName::new(record.name()))
            .or_default()
            .push(record);
    }

    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// Every record of the zone, the SOA first.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        std::iter::once(&self.soa).chain(self.records.values().flatten())
    }
}

/// What the local zones say about a question.
#[derive(Clone, Debug, PartialEq)]
pub enum LocalAnswer {
    /// Records of the asked type.
    Records(Vec<Record>),
    /// The name exists, without records of that type: NOERROR, SOA in authority.
    NoData(Record),
    /// The name does not exist in the zone: NXDOMAIN, SOA in authority.
    NxDomain(Record),
}

/// The `spartan` and `zk` zones for one master list.
#[derive(Clone, Debug)]
pub struct LocalZones {
    zones: Vec<Zone>,
    ready_name: LowerName,
}

impl LocalZones {
    /// Builds both zones with the first `zk` serial. `ns_addr` is the address
    /// of `ns.spartan` and `ns.zk` (the first listen address); `masters`
    /// fill `zk-1..zk-5` in order, repeated.
    pub fn new(ns_addr: Ipv4Addr, masters: &[Ipv4Addr]) -> Self {
        Self::with_zk_serial(ns_addr, masters, ZK_FIRST_SERIAL)
    }

    /// The same with the `zk` SOA serial given (it grows with each change of
    /// the master list, see `LocalAnswers`).
    pub fn with_zk_serial(ns_addr: Ipv4Addr, masters: &[Ipv4Addr], zk_serial: u32) -> Self {
        let spartan_origin = name("spartan.");
        let mut spartan = Zone::new(
            spartan_origin.clone(),
            SOA::new(
                name("ns.spartan."),
                name("support.mesosphere.com."),
                0,
                60,
                180,
                86400,
                1,
            ),
            A_TTL,
        );
        spartan.add(Record::from_rdata(
            spartan_origin,
            NS_TTL,
            RData::NS(NS(name("ns.spartan."))),
        ));
        spartan.add(Record::from_rdata(
            name("ns.spartan."),
            A_TTL,
            RData::A(A(ns_addr)),
        ));
        let ready = name("ready.spartan.");
        spartan.add(Record::from_rdata(
            ready.clone(),
            A_TTL,
            RData::A(A(READY_ADDR)),
        ));

        let zk_origin = name("zk.");
        let mut zk = Zone::new(
            zk_origin.clone(),
            SOA::new(
                name("ns.zk."),
                name("support.mesosphere.com."),
                zk_serial,
                600,
                300,
                86400,
                1,
            ),
            NS_TTL,
        );
        zk.add(Record::from_rdata(
            zk_origin,
            NS_TTL,
            RData::NS(NS(name("ns.zk."))),
        ));
        // The zone's NS resolves, like `ns.spartan`: Spartan serves it.
        zk.add(Record::from_rdata(
            name("ns.zk."),
            A_TTL,
            RData::A(A(ns_addr)),
        ));
        for (i, addr) in zk_addresses(masters).into_iter().enumerate() {
            zk.add(Record::from_rdata(
                name(&format!("zk-{}.zk.", i + 1)),
                A_TTL,
                RData::A(A(addr)),
            ));
        }
        Self {
            zones: vec![spartan, zk],
            ready_name: LowerName::new(&ready),
        }
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The zone that `name` belongs to, if it is one of ours.
    pub fn zone_for(&self, name: &LowerName) -> Option<&Zone> {
        self.zones.iter().find(|z| z.origin.zone_of(name))
    }

    /// Answers `name`/`rtype` from the zones; `None` when the name is not in
    /// a local zone (it is forwarded).
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Option<LocalAnswer> {
        let zone = self.zone_for(name)?;
        let at_apex = *name == zone.origin;
        let mut found: Vec<Record> = Vec::new();
        let mut exists = at_apex;
        if at_apex && matches!(rtype, RecordType::SOA | RecordType::ANY) {
            found.push(zone.soa.clone());
        }
        if let Some(records) = zone.records.get(name) {
            exists = true;
            found.extend(
                records
                    .iter()
                    .filter(|r| rtype == RecordType::ANY || r.record_type() == rtype)
                    .cloned(),
            );
        } else if !exists {
            // An empty non-terminal (a name with records below it) exists too.
            exists = zone.records.keys().any(|k| name.zone_of(k));
        }
        Some(if !found.is_empty() {
            LocalAnswer::Records(found)
        } else if exists {
            LocalAnswer::NoData(zone.soa.clone())
        } else {
            LocalAnswer::NxDomain(zone.soa.clone())
        })
    }

    /// The names that have A records, in every zone.
    fn names_with_a(&self) -> Vec<Name> {
        self.zones
            .iter()
            .flat_map(|zone| zone.records.values())
            .filter(|records| records.iter().any(|r| matches!(r.data(), RData::A(_))))
            .filter_map(|records| records.first().map(|r| r.name().clone()))
            .collect()
    }

    /// The kernel's local entries of the answers map, made the way the
    /// daemon answers: each name with A records is asked of these zones
    /// (with and without DO and CD, the other fields of the key) and the
    /// reply stored as the cache stores an upstream's, its TTLs fixed.
    /// `ready.spartan` carries the heartbeat flag, so the kernel answers it
    /// only while the daemon lives.
    pub fn kernel_answers(&self) -> Vec<(AnswerKey, AnswerValue)> {
        let mut out = Vec::new();
        for owner in self.names_with_a() {
            for flags in [0, KEY_DO, KEY_CD, KEY_DO | KEY_CD] {
                if let Some(entry) = self.kernel_entry(&owner, flags) {
                    out.push(entry);
                }
            }
        }
        out
    }

    fn kernel_entry(&self, owner: &Name, flags: u16) -> Option<(AnswerKey, AnswerValue)> {
        let mut query = Message::new();
        query
            .set_checking_disabled(flags & KEY_CD != 0)
            .add_query(Query::query(owner.clone(), RecordType::A));
        if flags & KEY_DO != 0 {
            query.set_edns(crate::message::our_edns(true));
        }
        let wire = query.to_vec().ok()?;
        let key = Asked::new(&wire, &query, Transport::Udp)?.key.kernel()?;
        let found = self.lookup(&LowerName::new(owner), RecordType::A)?;
        let reply = local_reply(&query, found).to_vec().ok()?;
        let mut value = CachedAnswer::from_reply(&reply, Ttls::Fixed)
            .ok()?
            .kernel_value(0, 0)?;
        if LowerName::new(owner) == self.ready_name {
            value.flags |= ANSWER_NEEDS_HEARTBEAT;
        }
        Some((key, value))
    }
}

/// An authoritative answer from the local zones to `query`.
pub fn local_reply(query: &Message, answer: LocalAnswer) -> Message {
    let (rcode, answers, authority): (ResponseCode, Vec<Record>, Vec<Record>) = match answer {
        LocalAnswer::Records(r) => (ResponseCode::NoError, r, Vec::new()),
        LocalAnswer::NoData(soa) => (ResponseCode::NoError, Vec::new(), vec![soa]),
        LocalAnswer::NxDomain(soa) => (ResponseCode::NXDomain, Vec::new(), vec![soa]),
    };
    let mut m = crate::message::response_to(query, rcode);
    m.set_authoritative(true);
    m.add_answers(answers);
    m.add_name_servers(authority);
    m
}

/// `zk-1..zk-5` addresses: the master list repeated in order, first five.
pub fn zk_addresses(masters: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    if masters.is_empty() {
        return Vec::new();
    }
    masters.iter().cycle().take(ZK_NAMES).copied().collect()
}

/// The kernel map key for `name` (class IN, no DO, no CD): lower-cased
/// wire format, zero padded. `None` for a name longer than the kernel
/// handles.
pub fn answer_key(name: &Name, qtype: u16) -> Option<AnswerKey> {
    let mut fqdn = name.to_lowercase();
    fqdn.set_fqdn(true);
    let wire = fqdn.to_bytes().ok()?;
    if wire.len() > MAX_NAME_LEN {
        return None;
    }
    let mut key = AnswerKey::zeroed();
    key.name[..wire.len()].copy_from_slice(&wire);
    key.qtype = qtype;
    key.qclass = 1;
    Some(key)
}

/// The name in an answers-map key, for display (`spartan stats`, bpftool).
pub fn key_name(key: &AnswerKey) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < key.name.len() {
        let len = key.name[i] as usize;
        if len == 0 || i + 1 + len > key.name.len() {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&key.name[i + 1..i + 1 + len]));
        out.push('.');
        i += 1 + len;
    }
    if out.is_empty() { ".".into() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn lower(s: &str) -> LowerName {
        LowerName::new(&name(s))
    }

    #[test]
    fn zk_names_repeat_the_master_list_in_order() {
        let (a, b, c) = (ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3"));
        assert_eq!(zk_addresses(&[a]), vec![a; 5]);
        assert_eq!(zk_addresses(&[a, b, c]), vec![a, b, c, a, b]);
        let seven: Vec<Ipv4Addr> = (1..=7).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        assert_eq!(zk_addresses(&seven), seven[..5].to_vec());
        assert!(zk_addresses(&[]).is_empty());
    }

    #[test]
    fn ready_answers_loopback_and_other_types_are_nodata() {
        let zones = LocalZones::new(ip("198.51.100.1"), &[]);
        match zones.lookup(&lower("READY.Spartan."), RecordType::A) {
            Some(LocalAnswer::Records(r)) => {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].data(), &RData::A(A(READY_ADDR)));
                assert_eq!(r[0].ttl(), 5);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            zones.lookup(&lower("ready.spartan."), RecordType::AAAA),
            Some(LocalAnswer::NoData(soa)) if soa.record_type() == RecordType::SOA
        ));
        assert!(matches!(
            zones.lookup(&lower("nope.spartan."), RecordType::A),
            Some(LocalAnswer::NxDomain(_))
        ));
        assert!(
            zones
                .lookup(&lower("example.com."), RecordType::A)
                .is_none()
        );
        assert!(zones.lookup(&lower("notspartan."), RecordType::A).is_none());
    }

    #[test]
    fn apex_has_soa_and_ns() {
        let zones = LocalZones::new(ip("198.51.100.1"), &[ip("10.0.0.1")]);
        for apex in ["spartan.", "zk."] {
            assert!(matches!(
                zones.lookup(&lower(apex), RecordType::SOA),
                Some(LocalAnswer::Records(r)) if r[0].record_type() == RecordType::SOA
            ));
            assert!(matches!(
                zones.lookup(&lower(apex), RecordType::NS),
                Some(LocalAnswer::Records(r)) if r[0].record_type() == RecordType::NS
            ));
            assert!(matches!(
                zones.lookup(&lower(apex), RecordType::A),
                Some(LocalAnswer::NoData(_))
            ));
        }
    }

    #[test]
    fn zk_records_without_masters_do_not_exist() {
        let zones = LocalZones::new(ip("198.51.100.1"), &[]);
        assert!(matches!(
            zones.lookup(&lower("zk-1.zk."), RecordType::A),
            Some(LocalAnswer::NxDomain(_))
        ));
    }

    #[test]
    fn kernel_answers_come_from_the_zone_records() {
        let masters = [ip("10.0.0.1"), ip("10.0.0.2")];
        let zones = LocalZones::new(ip("198.51.100.1"), &masters);
        let answers = zones.kernel_answers();
        // ns.spartan, ready.spartan, ns.zk, zk-1..zk-5; each with and
        // without DO and CD.
        assert_eq!(answers.len(), 8 * 4);
        let a = u16::from(RecordType::A);
        let ready = answer_key(&name("ready.spartan."), a).unwrap();
        let (_, v) = answers.iter().find(|(k, _)| *k == ready).unwrap();
        assert_eq!(v.flags, ANSWER_NEEDS_HEARTBEAT);
        assert_eq!(v.expires_ns, 0, "local answers never expire");
        assert_eq!(v.ancount, 1);
        let len = v.sections_len as usize;
        assert_eq!(&v.sections[len - 4..len], &[127, 0, 0, 1]);
        let zk3 = answer_key(&name("ZK-3.zk"), a).unwrap();
        let (_, v) = answers.iter().find(|(k, _)| *k == zk3).unwrap();
        let len = v.sections_len as usize;
        assert_eq!((v.flags, v.ancount), (0, 1));
        assert_eq!(&v.sections[len - 10..len - 6], &5u32.to_be_bytes(), "TTL");
        assert_eq!(&v.sections[len - 4..len], &[10, 0, 0, 1]);
        assert_eq!(key_name(&zk3), "zk-3.zk.");
    }

    #[test]
    fn answer_key_is_lowercase_wire_format() {
        let key = answer_key(&name("Ready.SPARTAN"), 1).unwrap();
        assert_eq!(&key.name[..15], b"\x05ready\x07spartan\x00");
        assert!(key.name[15..].iter().all(|b| *b == 0));
        let long = name(&format!("{0}.{0}.example.", "a".repeat(60)));
        assert!(answer_key(&long, 1).is_none());
    }
}
