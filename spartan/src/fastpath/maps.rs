//! Handles on the pinned maps, and the one writer of the answers map.

use std::{collections::HashSet, net::Ipv4Addr, path::Path};

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use spartan_common::{AnswerKey, AnswerValue, Counter, Interface, map_names};

use crate::cache::AnswerMap;

/// The fast path's maps, opened from their pins (works while the program
/// is loaded by another process, or by none).
pub struct KernelMaps {
    answers: HashMap<MapData, AnswerKey, AnswerValue>,
    listen_addrs: HashMap<MapData, [u8; 4], u8>,
    interfaces: HashMap<MapData, u32, Interface>,
    heartbeat: Array<MapData, u64>,
    counters: PerCpuArray<MapData, u64>,
}

/// Kernel counters summed over CPUs, in `Counter` order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot(pub Vec<(Counter, u64)>);

impl CounterSnapshot {
    pub fn get(&self, counter: Counter) -> u64 {
        self.0
            .iter()
            .find(|(c, _)| *c == counter)
            .map_or(0, |(_, v)| *v)
    }
}

fn open(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

impl KernelMaps {
    pub fn open_pinned(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            answers: open(pin_dir, map_names::ANSWERS)?.try_into()?,
            listen_addrs: open(pin_dir, map_names::LISTEN_ADDRS)?.try_into()?,
            interfaces: open(pin_dir, map_names::INTERFACES)?.try_into()?,
            heartbeat: open(pin_dir, map_names::HEARTBEAT)?.try_into()?,
            counters: open(pin_dir, map_names::COUNTERS)?.try_into()?,
        })
    }

    /// A second handle on the answers map, for the answer cache, which
    /// writes the cache entries (those with an expiry) while this one
    /// writes the local names.
    pub fn open_answer_map(pin_dir: &Path) -> Result<AnswerMap> {
        Ok(open(pin_dir, map_names::ANSWERS)?.try_into()?)
    }

    /// Makes the local names of the answers map (the entries without an
    /// expiry) exactly `entries`; cache entries are left alone. New and
    /// changed entries are written first and stale ones removed after, so
    /// that a query never meets an empty map or a half-written answer (each
    /// element update is atomic in the kernel).
    pub fn write_local_answers(&mut self, entries: &[(AnswerKey, AnswerValue)]) -> Result<()> {
        for (key, value) in entries {
            self.answers
                .insert(key, value, 0)
                .context("writing an answer to the kernel map")?;
        }
        let wanted: HashSet<AnswerKey> = entries.iter().map(|(k, _)| *k).collect();
        let stale: Vec<AnswerKey> = self
            .answers
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| v.expires_ns == 0 && !wanted.contains(k))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            // Gone already (another writer) is fine.
            let _ = self.answers.remove(&key);
        }
        Ok(())
    }

    /// Every entry of the answers map.
    pub fn answers(&self) -> Result<Vec<(AnswerKey, AnswerValue)>> {
        self.answers
            .iter()
            .map(|r| r.context("reading the answers map"))
            .collect()
    }

    /// Makes the listen-address set hold exactly `addrs`.
    pub fn write_listen_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        for addr in addrs {
            self.listen_addrs
                .insert(addr.octets(), 1, 0)
                .context("writing a listen address")?;
        }
        let stale: Vec<[u8; 4]> = self
            .listen_addrs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !addrs.contains(&Ipv4Addr::from(*k)))
            .collect();
        for key in stale {
            let _ = self.listen_addrs.remove(&key);
        }
        Ok(())
    }

    /// Tells the program about an interface it is attached to (its
    /// hardware address: frames for another are not answered).
    pub fn write_interface(&mut self, ifindex: u32, mac: [u8; 6], loopback: bool) -> Result<()> {
        let value = Interface {
            mac,
            loopback: loopback as u8,
            pad: 0,
        };
        self.interfaces
            .insert(ifindex, value, 0)
            .context("writing an interface")
    }

    /// Forgets an interface (gone, or the program detached from it).
    pub fn remove_interface(&mut self, ifindex: u32) {
        let _ = self.interfaces.remove(&ifindex);
    }

    /// Stores "now" (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`).
    pub fn beat(&mut self) -> Result<()> {
        self.set_heartbeat(monotonic_ns())
    }

    /// Stores a heartbeat value; zero means "never" (tests use it).
    pub fn set_heartbeat(&mut self, ns: u64) -> Result<()> {
        self.heartbeat
            .set(0, ns, 0)
            .context("writing the heartbeat")
    }

    /// The last heartbeat (CLOCK_MONOTONIC ns), zero if never.
    pub fn heartbeat(&self) -> Result<u64> {
        self.heartbeat.get(&0, 0).context("reading the heartbeat")
    }

    pub fn counters(&self) -> Result<CounterSnapshot> {
        let mut out = Vec::with_capacity(Counter::ALL.len());
        for counter in Counter::ALL {
            let per_cpu = self
                .counters
                .get(&(counter as u32), 0)
                .context("reading the counters map")?;
            out.push((counter, per_cpu.iter().sum()));
        }
        Ok(CounterSnapshot(out))
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
