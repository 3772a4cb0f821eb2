//! How long an upstream's answer may be served from the cache.

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RData,
};

use crate::config::CacheConfig;

/// The TTL caps of the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TtlPolicy {
    pub max_ttl_s: u32,
    pub mesos_max_ttl_s: u32,
    pub negative_ttl_s: u32,
}

impl From<&CacheConfig> for TtlPolicy {
    fn from(c: &CacheConfig) -> Self {
        Self {
            max_ttl_s: c.max_ttl_s,
            mesos_max_ttl_s: c.mesos_max_ttl_s,
            negative_ttl_s: c.negative_ttl_s,
        }
    }
}

/// Why an answer is not cached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotCached {
    /// SERVFAIL, REFUSED and every RCODE but NOERROR and NXDOMAIN.
    Rcode,
    /// TC set: the client must ask again over TCP.
    Truncated,
    /// A record with TTL 0 (or a cap of 0).
    ZeroTtl,
    /// NXDOMAIN or NODATA without an SOA to take the negative TTL from
    /// (RFC 2308: not cached), or a referral.
    NoSoa,
}

impl TtlPolicy {
    /// The seconds a positive answer (NOERROR with answers) whose smallest
    /// TTL is `min_ttl` may be served: the same rule as [`Self::ttl`],
    /// without parsing the records again.
    pub fn positive_ttl(&self, min_ttl: u32, mesos: bool) -> Result<u32, NotCached> {
        let mut ttl = min_ttl.min(self.max_ttl_s);
        if mesos {
            ttl = ttl.min(self.mesos_max_ttl_s);
        }
        if ttl == 0 {
            return Err(NotCached::ZeroTtl);
        }
        Ok(ttl)
    }

    /// The seconds `reply` may be served, for a name under `mesos.` or not.
    pub fn ttl(&self, reply: &Message, mesos: bool) -> Result<u32, NotCached> {
        if reply.truncated() {
            return Err(NotCached::Truncated);
        }
        let negative = match reply.response_code() {
            ResponseCode::NXDomain => true,
            ResponseCode::NoError => reply.answers().is_empty(),
            _ => return Err(NotCached::Rcode),
        };
        let records = || {
            reply
                .answers()
                .iter()
                .chain(reply.name_servers())
                .chain(reply.additionals())
        };
        if records().any(|r| r.ttl() == 0) {
            return Err(NotCached::ZeroTtl);
        }
        let ttl = if negative {
            // RFC 2308 §5: the SOA's TTL or its MINIMUM, whichever is less.
            let soa = reply
                .name_servers()
                .iter()
                .find_map(|r| match r.data() {
                    RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
                    _ => None,
                })
                .ok_or(NotCached::NoSoa)?;
            soa.min(self.negative_ttl_s)
        } else {
            records()
                .map(|r| r.ttl())
                .min()
                .unwrap_or(0)
                .min(self.max_ttl_s)
        };
        let ttl = if mesos {
            ttl.min(self.mesos_max_ttl_s)
        } else {
            ttl
        };
        if ttl == 0 {
            return Err(NotCached::ZeroTtl);
        }
        Ok(ttl)
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use hickory_proto::{
        op::{MessageType, Query},
        rr::{Name, Record, RecordType, rdata::A, rdata::SOA},
    };

    use super::*;

    const POLICY: TtlPolicy = TtlPolicy {
        max_ttl_s: 60,
        mesos_max_ttl_s: 5,
        negative_ttl_s: 5,
    };

    fn reply(rcode: ResponseCode, ttls: &[u32], soa: Option<(u32, u32)>) -> Message {
        let name = Name::from_str("x.example.").unwrap();
        let mut m = Message::new();
        m.set_message_type(MessageType::Response)
            .set_response_code(rcode)
            .add_query(Query::query(name.clone(), RecordType::A));
        for (i, ttl) in ttls.iter().enumerate() {
            m.add_answer(Record::from_rdata(
                name.clone(),
                *ttl,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i as u8))),
            ));
        }
        if let Some((ttl, minimum)) = soa {
            let soa = SOA::new(name.clone(), name.clone(), 1, 60, 60, 60, minimum);
            m.add_name_server(Record::from_rdata(name, ttl, RData::SOA(soa)));
        }
        m
    }

    #[test]
    fn smallest_ttl_capped() {
        assert_eq!(
            POLICY.ttl(&reply(ResponseCode::NoError, &[30, 20], None), false),
            Ok(20)
        );
        assert_eq!(
            POLICY.ttl(&reply(ResponseCode::NoError, &[3600], None), false),
            Ok(60)
        );
        assert_eq!(
            POLICY.ttl(&reply(ResponseCode::NoError, &[3600], None), true),
            Ok(5)
        );
    }

    #[test]
    fn negative_from_the_soa() {
        let r = reply(ResponseCode::NXDomain, &[], Some((3600, 3)));
        assert_eq!(POLICY.ttl(&r, false), Ok(3));
        let r = reply(ResponseCode::NoError, &[], Some((2, 3600)));
        assert_eq!(POLICY.ttl(&r, false), Ok(2));
        let r = reply(ResponseCode::NoError, &[], Some((3600, 3600)));
        assert_eq!(POLICY.ttl(&r, false), Ok(5));
        let r = reply(ResponseCode::NXDomain, &[], None);
        assert_eq!(POLICY.ttl(&r, false), Err(NotCached::NoSoa));
    }

    #[test]
    fn the_positive_shortcut_agrees() {
        for (ttls, mesos) in [
            (&[30u32, 20][..], false),
            (&[3600], false),
            (&[3600], true),
            (&[30, 0], false),
        ] {
            let r = reply(ResponseCode::NoError, ttls, None);
            let min = *ttls.iter().min().unwrap();
            assert_eq!(POLICY.ttl(&r, mesos), POLICY.positive_ttl(min, mesos));
        }
    }

    #[test]
    fn never_cached() {
        let r = reply(ResponseCode::ServFail, &[], None);
        assert_eq!(POLICY.ttl(&r, false), Err(NotCached::Rcode));
        let r = reply(ResponseCode::Refused, &[], None);
        assert_eq!(POLICY.ttl(&r, false), Err(NotCached::Rcode));
        let r = reply(ResponseCode::NoError, &[30, 0], None);
        assert_eq!(POLICY.ttl(&r, false), Err(NotCached::ZeroTtl));
        let mut r = reply(ResponseCode::NoError, &[30], None);
        r.set_truncated(true);
        assert_eq!(POLICY.ttl(&r, false), Err(NotCached::Truncated));
    }
}
