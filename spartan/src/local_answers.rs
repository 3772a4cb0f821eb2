//! The local zones and the kernel's answers map, written together by one
//! piece of code so that the daemon and the kernel never disagree.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex, RwLock},
};

use anyhow::Result;

use crate::{fastpath::KernelMaps, zone::LocalZones};

/// The answers to Spartan's own names: the local zones the daemon answers
/// from, and the kernel's answers map, which this type alone writes from
/// them.
pub struct LocalAnswers {
    ns_addr: Ipv4Addr,
    /// The `zk` SOA serial now: one more with each new master list.
    zk_serial: Mutex<u32>,
    zones: RwLock<Arc<LocalZones>>,
    kernel: Mutex<Option<KernelMaps>>,
}

impl LocalAnswers {
    pub fn new(ns_addr: Ipv4Addr, masters: &[Ipv4Addr]) -> Self {
        Self {
            ns_addr,
            zk_serial: Mutex::new(crate::zone::ZK_FIRST_SERIAL),
            zones: RwLock::new(Arc::new(LocalZones::new(ns_addr, masters))),
            kernel: Mutex::new(None),
        }
    }

    /// The zones as they are now.
    pub fn zones(&self) -> Arc<LocalZones> {
        self.zones.read().expect("zones lock").clone()
    }

    /// From now on the kernel's answers map follows the zones; it is
    /// written at once.
    pub fn attach_kernel(&self, mut maps: KernelMaps) -> Result<()> {
        maps.write_local_answers(&self.zones().kernel_answers())?;
        *self.kernel.lock().expect("kernel lock") = Some(maps);
        Ok(())
    }

    /// Runs `f` on the kernel maps, if the fast path is on.
    pub fn with_kernel<T>(&self, f: impl FnOnce(&mut KernelMaps) -> T) -> Option<T> {
        self.kernel.lock().expect("kernel lock").as_mut().map(f)
    }

    /// Rebuilds the zones for a new master list: the kernel map is written
    /// first (new entries before stale ones are removed), then the daemon's
    /// zones are swapped in one step.
    pub fn set_masters(&self, masters: &[Ipv4Addr]) -> Result<()> {
        let mut serial = self.zk_serial.lock().expect("serial lock");
        let next = serial.wrapping_add(1);
        let zones = Arc::new(LocalZones::with_zk_serial(self.ns_addr, masters, next));
        let mut kernel = self.kernel.lock().expect("kernel lock");
        if let Some(maps) = kernel.as_mut() {
            maps.write_local_answers(&zones.kernel_answers())?;
        }
        *self.zones.write().expect("zones lock") = zones;
        *serial = next;
        Ok(())
    }
}
