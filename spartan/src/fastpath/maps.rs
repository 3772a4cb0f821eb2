//! Handles on the pinned maps.

use std::{
    collections::HashSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use spartan_common::{
    AnswerKey, AnswerValue, Counter, Interface, InterfaceSlot, LISTEN_ADDRS_MAX_ENTRIES,
    interface_slot, map_names,
};

use super::answer_table::{self, AnswerTable};

/// The fast path's maps, opened from their pins (works while the program
/// is loaded by another process, or by none).
pub struct KernelMaps {
    pin_dir: PathBuf,
    /// Read-only use of the answers map goes through this handle; writes go
    /// through `table`, opened on the first write (see `answer_table`).
    answers: HashMap<MapData, u64, AnswerValue>,
    table: Option<AnswerTable>,
    listen_addrs: Array<MapData, [u8; 4]>,
    interfaces: HashMap<MapData, u32, Interface>,
    interface_slots: Array<MapData, InterfaceSlot>,
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

pub(super) fn open(pin_dir: &Path, name: &str) -> Result<Map> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path)
        .with_context(|| format!("opening pinned map {}", path.display()))?;
    Map::from_map_data(data).with_context(|| format!("map {name}"))
}

impl KernelMaps {
    pub fn open_pinned(pin_dir: &Path) -> Result<Self> {
        Ok(Self {
            pin_dir: pin_dir.to_path_buf(),
            answers: open(pin_dir, map_names::ANSWERS)?.try_into()?,
            table: None,
            listen_addrs: open(pin_dir, map_names::LISTEN_ADDRS)?.try_into()?,
            interfaces: open(pin_dir, map_names::INTERFACES)?.try_into()?,
            interface_slots: open(pin_dir, map_names::INTERFACE_SLOTS)?.try_into()?,
            heartbeat: open(pin_dir, map_names::HEARTBEAT)?.try_into()?,
            counters: open(pin_dir, map_names::COUNTERS)?.try_into()?,
        })
    }

    /// The writer of the answers map, shared by the local names (written
    /// through these maps) and the answer cache (the entries with an
    /// expiry). Opening it takes the presence filter over: only the daemon,
    /// or a test or benchmark that stands for it, asks for it.
    pub fn answer_table(&mut self) -> Result<AnswerTable> {
        if let Some(table) = &self.table {
            return Ok(table.clone());
        }
        let table = AnswerTable::open(&self.pin_dir)?;
        self.table = Some(table.clone());
        Ok(table)
    }

    /// Makes the local names of the answers map (the entries without an
    /// expiry) exactly `entries`; cache entries are left alone. New and
    /// changed entries are written first and stale ones removed after, so
    /// that a query never meets an empty map or a half-written answer (each
    /// element update is atomic in the kernel).
    pub fn write_local_answers(&mut self, entries: &[(AnswerKey, AnswerValue)]) -> Result<()> {
        let table = self.answer_table()?;
        for (key, value) in entries {
            table.insert(key, value)?;
        }
        let wanted: HashSet<AnswerKey> = entries.iter().map(|(k, _)| *k).collect();
        let stale: Vec<AnswerKey> = self
            .answers()?
            .into_iter()
            .filter(|(k, v)| v.expires_ns == 0 && !wanted.contains(k))
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            table.remove(&key);
        }
        Ok(())
    }

    /// Every entry of the answers map.
    pub fn answers(&self) -> Result<Vec<(AnswerKey, AnswerValue)>> {
        answer_table::entries(&self.answers)
    }

    /// Makes the listen-address list hold exactly `addrs` (0.0.0.0, which
    /// ends the list, is not an address to answer on).
    pub fn write_listen_addrs(&mut self, addrs: &[Ipv4Addr]) -> Result<()> {
        if addrs.len() >= LISTEN_ADDRS_MAX_ENTRIES as usize {
            bail!(
                "{} listen addresses: the kernel path takes at most {}",
                addrs.len(),
                LISTEN_ADDRS_MAX_ENTRIES - 1
            );
        }
        let listed = addrs.iter().filter(|a| !a.is_unspecified());
        let slots = listed.map(|a| a.octets()).chain(std::iter::repeat([0; 4]));
        for (index, addr) in (0..LISTEN_ADDRS_MAX_ENTRIES).zip(slots) {
            self.listen_addrs
                .set(index, addr, 0)
                .context("writing a listen address")?;
        }
        Ok(())
    }

    /// Tells the program about an interface it is attached to (its
    /// hardware address: frames for another are not answered). It goes
    /// into the hash map, and into its slot of the array unless another
    /// interface holds that slot.
    pub fn write_interface(&mut self, ifindex: u32, mac: [u8; 6], loopback: bool) -> Result<()> {
        let iface = Interface {
            mac,
            loopback: loopback as u8,
            pad: 0,
        };
        self.interfaces
            .insert(ifindex, iface, 0)
            .context("writing an interface")?;
        let slot = self.interface_slot(ifindex)?;
        if slot.ifindex == 0 || slot.ifindex == ifindex {
            self.set_interface_slot(ifindex, InterfaceSlot { ifindex, iface })?;
        }
        Ok(())
    }

    /// Forgets an interface (gone, or the program detached from it); its
    /// slot goes to another interface of the same slot, if any.
    pub fn remove_interface(&mut self, ifindex: u32) {
        let _ = self.interfaces.remove(&ifindex);
        if !self
            .interface_slot(ifindex)
            .is_ok_and(|s| s.ifindex == ifindex)
        {
            return;
        }
        let heir = self
            .interfaces
            .iter()
            .flatten()
            .find(|(other, _)| interface_slot(*other) == interface_slot(ifindex))
            .map(|(ifindex, iface)| InterfaceSlot { ifindex, iface });
        if let Err(e) = self.set_interface_slot(ifindex, heir.unwrap_or(InterfaceSlot::FREE)) {
            tracing::warn!(ifindex, error = %format!("{e:#}"), "interface slot not cleared");
        }
    }

    fn interface_slot(&self, ifindex: u32) -> Result<InterfaceSlot> {
        self.interface_slots
            .get(&interface_slot(ifindex), 0)
            .context("reading an interface slot")
    }

    fn set_interface_slot(&mut self, ifindex: u32, slot: InterfaceSlot) -> Result<()> {
        self.interface_slots
            .set(interface_slot(ifindex), slot, 0)
            .context("writing an interface slot")
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
