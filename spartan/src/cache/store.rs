//! The answer store: least recently used out first, bounded in entries and
//! bytes, and mirrored into the kernel's answers map. Every write to the
//! kernel's cache entries goes through here.

use std::sync::{Arc, Mutex, MutexGuard};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};
use lru::LruCache;
use serde::Serialize;
use spartan_common::{AnswerKey, KERNEL_MIRROR_MAX};

use super::{
    answer::{CachedAnswer, Ttls},
    key::CacheKey,
    policy::{NotCached, TtlPolicy},
};
use crate::{config::CacheConfig, fastpath::AnswerTable, stats::Stats};

const NS: u64 = 1_000_000_000;

struct Entry {
    answer: Arc<CachedAnswer>,
    /// CLOCK_MONOTONIC ns.
    expires_ns: u64,
    ttl: u32,
    in_kernel: bool,
    /// When a refresh last failed (every upstream of the route), 0 if
    /// never: for [`STALE_REFRESH_NS`] after that the stale answer is served
    /// at once instead of trying again.
    refresh_failed_ns: u64,
}

/// After a failed refresh, how long an expired answer is served without
/// asking upstream again (RFC 8767 §5 suggests 30 s).
const STALE_REFRESH_NS: u64 = 30 * NS;

/// What the cache has for a key.
pub enum Found {
    /// A fresh answer and its seconds left.
    Fresh(Arc<CachedAnswer>, u32),
    /// An expired answer whose refresh failed moments ago: served stale
    /// without asking upstream.
    Stale(Arc<CachedAnswer>),
    Miss,
}

struct Mirror {
    map: AnswerTable,
    count: usize,
}

struct Store {
    lru: LruCache<CacheKey, Entry, foldhash::quality::RandomState>,
    bytes: usize,
    mirror: Option<Mirror>,
}

/// One entry, for `/v1/cache` and `spartan stats`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct EntryView {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
    pub rcode: u16,
    /// Seconds left; negative: expired this long ago (kept for serve-stale).
    pub ttl_left: i64,
    pub in_kernel: bool,
}

pub struct AnswerCache {
    config: CacheConfig,
    policy: TtlPolicy,
    stats: Arc<Stats>,
    store: Mutex<Store>,
}

/// Seconds from `now` to `expires`, rounded up (an answer that has not
/// expired says at least 1).
pub fn seconds_left(expires_ns: u64, now_ns: u64) -> u32 {
    (expires_ns.saturating_sub(now_ns).div_ceil(NS)) as u32
}

impl AnswerCache {
    pub fn new(config: &CacheConfig, stats: Arc<Stats>) -> Self {
        Self {
            policy: TtlPolicy::from(config),
            config: config.clone(),
            stats,
            store: Mutex::new(Store {
                lru: LruCache::unbounded_with_hasher(Default::default()),
                bytes: 0,
                mirror: None,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().expect("cache lock")
    }

    /// From now on stored answers are mirrored into `map`. Cache entries a
    /// previous daemon left there are removed first (this store does not
    /// know them); the local names stay.
    pub fn attach_kernel(&self, map: AnswerTable) {
        let entries = map.entries().unwrap_or_else(|e| {
            // Left as they are: they expire, and each is replaced when
            // this store caches its key.
            tracing::warn!(error = %format!("{e:#}"), "a previous daemon's cache entries not read");
            Vec::new()
        });
        let leftovers: Vec<AnswerKey> = entries
            .into_iter()
            .filter(|(_, v)| v.expires_ns != 0)
            .map(|(k, _)| k)
            .collect();
        for key in leftovers {
            map.remove(&key);
        }
        self.store().mirror = Some(Mirror { map, count: 0 });
    }

    /// What the cache has for `key` now.
    pub fn find(&self, key: &CacheKey, now_ns: u64) -> Found {
        let mut store = self.store();
        let Some(entry) = store.lru.get(key) else {
            return Found::Miss;
        };
        if entry.expires_ns > now_ns {
            let left = seconds_left(entry.expires_ns, now_ns).min(entry.ttl);
            return Found::Fresh(entry.answer.clone(), left);
        }
        let stale_for = now_ns - entry.expires_ns;
        if stale_for > u64::from(self.config.stale_max_s) * NS {
            store.remove(key);
            return Found::Miss;
        }
        if entry.refresh_failed_ns != 0 && now_ns - entry.refresh_failed_ns < STALE_REFRESH_NS {
            return Found::Stale(entry.answer.clone());
        }
        Found::Miss
    }

    /// A fresh answer for `key` with its seconds left.
    pub fn lookup(&self, key: &CacheKey, now_ns: u64) -> Option<(Arc<CachedAnswer>, u32)> {
        match self.find(key, now_ns) {
            Found::Fresh(answer, left) => Some((answer, left)),
            _ => None,
        }
    }

    /// Every upstream failed to refresh `key`: the stale answer, if there is
    /// one within `stale_max_s`, which is then served at once for a while.
    pub fn refresh_failed(&self, key: &CacheKey, now_ns: u64) -> Option<Arc<CachedAnswer>> {
        let answer = self.stale(key, now_ns)?;
        if let Some(entry) = self.store().lru.peek_mut(key) {
            entry.refresh_failed_ns = now_ns.max(1);
        }
        Some(answer)
    }

    /// How long a client waits for the upstreams before it gets the stale
    /// answer, when there is one (RFC 8767's client response timer).
    pub fn stale_answer_after(&self) -> Option<std::time::Duration> {
        (self.config.stale_max_s > 0)
            .then(|| std::time::Duration::from_millis(self.config.stale_answer_after_ms))
    }

    /// An expired answer for `key` still within `stale_max_s` of its expiry.
    pub fn stale(&self, key: &CacheKey, now_ns: u64) -> Option<Arc<CachedAnswer>> {
        let mut store = self.store();
        let entry = store.lru.get(key)?;
        let within =
            now_ns.saturating_sub(entry.expires_ns) <= u64::from(self.config.stale_max_s) * NS;
        (self.config.stale_max_s > 0 && within).then(|| entry.answer.clone())
    }

    /// Stores the upstream's `reply` for `key` when the policy allows; the
    /// answer and its TTL.
    pub fn insert(
        &self,
        key: &CacheKey,
        reply: &[u8],
        mesos: bool,
        now_ns: u64,
    ) -> Result<(Arc<CachedAnswer>, u32), NotCached> {
        // The header and the record walk decide most answers; only a
        // negative one is parsed whole, for its SOA.
        let header = crate::message::header(reply).ok_or(NotCached::Rcode)?;
        if header.truncated() {
            return Err(NotCached::Truncated);
        }
        let answer = CachedAnswer::from_reply(reply, Ttls::Aged).map_err(|_| NotCached::Rcode)?;
        let ttl = match header.response_code() {
            ResponseCode::NoError if answer.header.answer_count() > 0 => {
                self.policy.positive_ttl(answer.min_ttl, mesos)?
            }
            ResponseCode::NoError | ResponseCode::NXDomain => {
                let parsed = Message::from_vec(reply).map_err(|_| NotCached::Rcode)?;
                self.policy.ttl(&parsed, mesos)?
            }
            _ => return Err(NotCached::Rcode),
        };
        let answer = Arc::new(answer);
        let expires_ns = now_ns + u64::from(ttl) * NS;
        let mut store = self.store();
        let was_in_kernel = store.remove_entry(key, false).is_some_and(|e| e.in_kernel);
        let in_kernel = store.mirror(key, &answer, (expires_ns, ttl), was_in_kernel, &self.stats);
        store.bytes += entry_size(key, &answer);
        store.lru.push(
            key.clone(),
            Entry {
                answer: answer.clone(),
                expires_ns,
                ttl,
                in_kernel,
                refresh_failed_ns: 0,
            },
        );
        Stats::inc(&self.stats.cache_inserts);
        while store.lru.len() > self.config.max_entries || store.bytes > self.config.max_bytes {
            let Some(oldest) = store.lru.peek_lru().map(|(k, _)| k.clone()) else {
                break;
            };
            store.remove(&oldest);
            Stats::inc(&self.stats.cache_evictions);
        }
        Ok((answer, ttl))
    }

    /// Removes every entry, or those of one name (every type); how many.
    pub fn flush(&self, name: Option<&[u8]>) -> usize {
        let mut store = self.store();
        let keys: Vec<CacheKey> = store
            .lru
            .iter()
            .filter(|(k, _)| name.is_none_or(|n| *k.name == *n))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            store.remove(key);
        }
        keys.len()
    }

    /// Removes the entries of names at or under `zone` (`"mesos."`); how many.
    pub fn flush_zone(&self, zone: &str) -> usize {
        let Ok(zone) = hickory_proto::rr::Name::from_ascii(zone) else {
            return 0;
        };
        let zone = hickory_proto::rr::LowerName::new(&zone);
        let mut store = self.store();
        let keys: Vec<CacheKey> = store
            .lru
            .iter()
            .filter(|(k, _)| {
                k.decoded_name()
                    .is_some_and(|n| zone.zone_of(&hickory_proto::rr::LowerName::new(&n)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in &keys {
            store.remove(key);
        }
        keys.len()
    }

    /// Entries now, most recently used first.
    pub fn entries(&self, now_ns: u64) -> Vec<EntryView> {
        self.store()
            .lru
            .iter()
            .map(|(k, e)| EntryView {
                name: k.name_text(),
                rtype: RecordType::from(k.qtype).to_string(),
                dnssec_ok: k.flags & spartan_common::KEY_DO != 0,
                checking_disabled: k.flags & spartan_common::KEY_CD != 0,
                rcode: u16::from(e.answer.rcode()),
                ttl_left: if e.expires_ns > now_ns {
                    i64::from(seconds_left(e.expires_ns, now_ns).min(e.ttl))
                } else {
                    -(((now_ns - e.expires_ns) / NS) as i64)
                },
                in_kernel: e.in_kernel,
            })
            .collect()
    }

    /// (entries, bytes, entries mirrored in the kernel).
    pub fn size(&self) -> (usize, usize, usize) {
        let store = self.store();
        let mirrored = store.mirror.as_ref().map_or(0, |m| m.count);
        (store.lru.len(), store.bytes, mirrored)
    }
}

fn entry_size(key: &CacheKey, answer: &CachedAnswer) -> usize {
    key.name.len() + answer.size() + std::mem::size_of::<Entry>()
}

impl Store {
    fn remove(&mut self, key: &CacheKey) {
        self.remove_entry(key, true);
    }

    /// Takes `key` out; its kernel copy too when `from_kernel`.
    fn remove_entry(&mut self, key: &CacheKey, from_kernel: bool) -> Option<Entry> {
        let entry = self.lru.pop(key)?;
        self.bytes -= entry_size(key, &entry.answer);
        if entry.in_kernel
            && let Some(mirror) = self.mirror.as_mut()
        {
            mirror.count -= 1;
            if from_kernel && let Some(k) = key.kernel() {
                mirror.map.remove(&k);
            }
        }
        Some(entry)
    }

    /// Writes the answer to the kernel map when it fits and there is room
    /// (an entry that was there keeps its place); whether it is there.
    fn mirror(
        &mut self,
        key: &CacheKey,
        answer: &CachedAnswer,
        (expires_ns, ttl): (u64, u32),
        was_in_kernel: bool,
        stats: &Stats,
    ) -> bool {
        let Some(mirror) = self.mirror.as_mut() else {
            return false;
        };
        let kernel_key = key.kernel();
        let value = answer.kernel_value(expires_ns, ttl);
        let (Some(k), Some(v)) = (kernel_key, value) else {
            if was_in_kernel && let Some(k) = kernel_key {
                mirror.map.remove(&k);
            }
            return false;
        };
        if !was_in_kernel && mirror.count >= KERNEL_MIRROR_MAX {
            return false;
        }
        match mirror.map.insert(&k, &v) {
            Ok(()) => {
                mirror.count += 1;
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "kernel cache entry not written");
                Stats::inc(&stats.cache_mirror_errors);
                if was_in_kernel {
                    mirror.map.remove(&k);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, str::FromStr};

    use hickory_proto::{
        op::{MessageType, Query},
        rr::{Name, RData, Record, rdata::A},
        serialize::binary::BinEncodable,
    };

    use super::*;

    fn config(max_entries: usize) -> CacheConfig {
        CacheConfig {
            enabled: true,
            max_entries,
            max_bytes: 1 << 20,
            max_ttl_s: 60,
            mesos_max_ttl_s: 5,
            negative_ttl_s: 5,
            stale_max_s: 100,
            stale_answer_after_ms: 500,
        }
    }

    fn key(n: &str) -> CacheKey {
        let name = Name::from_str(n).unwrap().to_lowercase();
        CacheKey {
            name: name.to_bytes().unwrap().into(),
            qtype: 1,
            qclass: 1,
            flags: 0,
        }
    }

    fn reply(n: &str, ttl: u32) -> Vec<u8> {
        let name = Name::from_str(n).unwrap();
        let mut m = Message::new();
        m.set_message_type(MessageType::Response)
            .add_query(Query::query(name.clone(), RecordType::A))
            .add_answer(Record::from_rdata(
                name,
                ttl,
                RData::A(A(Ipv4Addr::new(10, 0, 0, 1))),
            ));
        m.to_vec().unwrap()
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let cache = AnswerCache::new(&config(10), Arc::default());
        let k = key("a.example.");
        let (_, ttl) = cache
            .insert(&k, &reply("a.example.", 30), false, 0)
            .unwrap();
        assert_eq!(ttl, 30);
        assert_eq!(cache.lookup(&k, NS / 2).unwrap().1, 30);
        assert_eq!(cache.lookup(&k, 10 * NS + 1).unwrap().1, 20);
        assert!(cache.lookup(&k, 30 * NS).is_none());
        assert!(cache.stale(&k, 30 * NS).is_some());
        assert!(cache.stale(&k, 130 * NS).is_some());
        assert!(
            matches!(cache.find(&k, 40 * NS), Found::Miss),
            "not served stale before a failure"
        );
        assert!(cache.refresh_failed(&k, 40 * NS).is_some());
        assert!(
            matches!(cache.find(&k, 41 * NS), Found::Stale(_)),
            "stale at once after one"
        );
        assert!(
            matches!(cache.find(&k, 71 * NS), Found::Miss),
            "and tried again 30 s later"
        );
        assert!(cache.stale(&k, 131 * NS).is_none());
        assert!(cache.lookup(&k, 131 * NS).is_none());
        assert_eq!(cache.size().0, 0, "removed past the stale window");
    }

    #[test]
    fn least_recently_used_goes_first() {
        let stats = Arc::new(Stats::default());
        let cache = AnswerCache::new(&config(2), stats.clone());
        for n in ["a.example.", "b.example."] {
            cache.insert(&key(n), &reply(n, 30), false, 0).unwrap();
        }
        cache.lookup(&key("a.example."), 1);
        cache
            .insert(&key("c.example."), &reply("c.example.", 30), false, 0)
            .unwrap();
        assert!(cache.lookup(&key("a.example."), 1).is_some());
        assert!(cache.lookup(&key("b.example."), 1).is_none());
        assert_eq!(stats.snapshot().cache_evictions, 1);
        assert_eq!(cache.flush(Some(&key("a.example.").name)), 1);
        assert_eq!(cache.flush(None), 1);
        assert_eq!(cache.size(), (0, 0, 0));
    }

    #[test]
    fn byte_budget_evicts() {
        let mut c = config(1000);
        c.max_bytes = 4096;
        let cache = AnswerCache::new(&c, Arc::default());
        for i in 0..100 {
            let n = format!("host{i}.example.");
            cache.insert(&key(&n), &reply(&n, 30), false, 0).unwrap();
        }
        let (entries, bytes, _) = cache.size();
        assert!(
            bytes <= 4096 && entries < 100 && entries > 0,
            "{entries} {bytes}"
        );
    }
}
