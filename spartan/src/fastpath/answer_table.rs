//! The one writer of the kernel's answers: the answers map and the presence
//! filter in front of it, kept in step.
//!
//! The map is keyed by `AnswerKey::hash`. A key's bit is set before its
//! entry is written and cleared after the last entry that uses it is
//! removed, so the XDP program never skips an entry that is there. Keys and
//! bits are counted here (several keys may share a bit), which is why every
//! writer in the process shares one table: clones of it, not separate opens
//! of the pins.

use std::{
    collections::HashMap as StdHashMap,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use anyhow::{Context, Result, bail};
use aya::maps::{Array, HashMap, MapData};
use spartan_common::{AnswerKey, AnswerValue, PRESENCE_WORDS};

use super::maps::open;

/// A handle on the answers map and its presence filter; clones share them.
#[derive(Clone)]
pub struct AnswerTable(Arc<Mutex<Tables>>);

struct Tables {
    answers: HashMap<MapData, u64, AnswerValue>,
    presence: Array<MapData, u64>,
    /// The keys written through this table (or found at open), by hash.
    keys: StdHashMap<u64, AnswerKey, foldhash::quality::RandomState>,
    /// How many of `keys` use each bit.
    users: Vec<u16>,
}

impl AnswerTable {
    /// Opens the pinned maps and makes the filter match the entries there
    /// (a previous daemon's, or none): bits of entries it left are set, bits
    /// of nothing are cleared. There must be one table per set of maps: a
    /// second would count its bits without the first one's keys.
    pub fn open(pin_dir: &Path) -> Result<Self> {
        let mut answers: HashMap<MapData, u64, AnswerValue> =
            open(pin_dir, spartan_common::map_names::ANSWERS)?.try_into()?;
        let presence: Array<MapData, u64> =
            open(pin_dir, spartan_common::map_names::PRESENCE)?.try_into()?;
        let found: Vec<(u64, AnswerValue)> = answers
            .iter()
            .collect::<Result<_, _>>()
            .context("reading the answers map")?;
        let mut keys = StdHashMap::default();
        let mut users = vec![0u16; PRESENCE_WORDS as usize * 64];
        for (hash, value) in found {
            if value.key.hash() != hash {
                // Not an entry this program could ever serve.
                let _ = answers.remove(&hash);
                continue;
            }
            let bit = &mut users[value.key.presence_bit() as usize];
            *bit = bit.saturating_add(1);
            keys.insert(hash, value.key);
        }
        let mut tables = Tables {
            answers,
            presence,
            keys,
            users,
        };
        for word in 0..PRESENCE_WORDS {
            tables.write_word(word)?;
        }
        Ok(Self(Arc::new(Mutex::new(tables))))
    }

    fn lock(&self) -> MutexGuard<'_, Tables> {
        self.0.lock().expect("answer table lock")
    }

    /// Writes (or replaces) the answer for `key`; the kernel may serve it
    /// at once. Refused when another key with the same hash is there (it
    /// keeps its place; this one is answered by the daemon).
    pub fn insert(&self, key: &AnswerKey, value: &AnswerValue) -> Result<()> {
        let hash = key.hash();
        let mut tables = self.lock();
        let new = match tables.keys.get(&hash) {
            Some(there) if there != key => bail!("another key with the same hash is there"),
            Some(_) => false,
            None => {
                tables.mark(key.presence_bit())?;
                tables.keys.insert(hash, *key);
                true
            }
        };
        let value = AnswerValue {
            key: *key,
            ..*value
        };
        let written = tables.answers.insert(hash, value, 0);
        if written.is_err() && new {
            tables.keys.remove(&hash);
            tables.unmark(key.presence_bit());
        }
        written.context("writing an answer to the kernel map")
    }

    /// Removes the answer for `key`; false if it was not there.
    pub fn remove(&self, key: &AnswerKey) -> bool {
        let hash = key.hash();
        let mut tables = self.lock();
        if tables.keys.get(&hash) != Some(key) {
            return false;
        }
        tables.keys.remove(&hash);
        // Gone already (the kernel's LRU, or `spartan down`) is fine.
        let removed = tables.answers.remove(&hash).is_ok();
        tables.unmark(key.presence_bit());
        removed
    }

    /// Every entry of the answers map.
    pub fn entries(&self) -> Result<Vec<(AnswerKey, AnswerValue)>> {
        entries(&self.lock().answers)
    }
}

impl Tables {
    /// One more key uses `bit`: set before its entry is written.
    fn mark(&mut self, bit: u32) -> Result<()> {
        let users = &mut self.users[bit as usize];
        *users = users.saturating_add(1);
        if *users == 1
            && let Err(e) = self.write_word(bit / 64)
        {
            self.users[bit as usize] = 0;
            return Err(e);
        }
        Ok(())
    }

    /// One key fewer uses `bit`: cleared after the last one's entry is
    /// gone. A failed write leaves it set: a query for it then only costs
    /// the hash lookup the filter saves.
    fn unmark(&mut self, bit: u32) {
        let users = &mut self.users[bit as usize];
        *users = users.saturating_sub(1);
        if *users == 0 {
            let _ = self.write_word(bit / 64);
        }
    }

    /// Writes filter word `word` from the bits' users.
    fn write_word(&mut self, word: u32) -> Result<()> {
        let first = word as usize * 64;
        let bits = self.users[first..first + 64]
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, users)| w | (u64::from(*users != 0) << i));
        self.presence
            .set(word, bits, 0)
            .context("writing the presence filter")
    }
}

/// Every entry of an answers map, with the key each value holds.
pub(super) fn entries(
    answers: &HashMap<MapData, u64, AnswerValue>,
) -> Result<Vec<(AnswerKey, AnswerValue)>> {
    answers
        .iter()
        .map(|r| {
            r.map(|(_, v)| (v.key, v))
                .context("reading the answers map")
        })
        .collect()
}
