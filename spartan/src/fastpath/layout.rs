//! The layout every pinned map must have for the program this daemon
//! embeds. A map pinned by another version (a key or value that changed
//! size, another capacity) would be reused by the loader as it is; it is
//! removed instead, and the loader creates it anew.

use std::{mem::size_of, path::Path};

use anyhow::{Context, Result};
use aya::maps::{MapInfo, MapType};
use spartan_common::{
    ANSWERS_MAX_ENTRIES, AnswerValue, Counter, INTERFACE_SLOTS, INTERFACES_MAX_ENTRIES, Interface,
    InterfaceSlot, LISTEN_ADDRS_MAX_ENTRIES, PRESENCE_WORDS, map_names,
};

/// What one map looks like to the kernel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// The layout of each map of the embedded program.
pub fn expected(name: &str) -> Option<Layout> {
    let layout = |map_type: MapType, key: usize, value: usize, max_entries: u32| Layout {
        map_type,
        key_size: key as u32,
        value_size: value as u32,
        max_entries,
    };
    Some(match name {
        map_names::ANSWERS => layout(
            MapType::LruHash,
            size_of::<u64>(),
            size_of::<AnswerValue>(),
            ANSWERS_MAX_ENTRIES,
        ),
        map_names::INTERFACES => layout(
            MapType::Hash,
            4,
            size_of::<Interface>(),
            INTERFACES_MAX_ENTRIES,
        ),
        // Arrays: a u32 index.
        map_names::INTERFACE_SLOTS => layout(
            MapType::Array,
            4,
            size_of::<InterfaceSlot>(),
            INTERFACE_SLOTS,
        ),
        map_names::LISTEN_ADDRS => layout(MapType::Array, 4, 4, LISTEN_ADDRS_MAX_ENTRIES),
        map_names::HEARTBEAT => layout(MapType::Array, 4, 8, 1),
        map_names::COUNTERS => layout(MapType::PerCpuArray, 4, 8, Counter::COUNT),
        map_names::PRESENCE => layout(MapType::Array, 4, 8, PRESENCE_WORDS),
        _ => return None,
    })
}

/// The layout of the map pinned at `path`.
pub fn pinned(path: &Path) -> Result<Layout> {
    let info = MapInfo::from_pin(path)
        .with_context(|| format!("reading the map at {}", path.display()))?;
    Ok(Layout {
        map_type: info
            .map_type()
            .with_context(|| format!("the type of the map at {}", path.display()))?,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    })
}

/// Removes the pins among `names` under `pin_dir` whose map does not have
/// the expected layout (or cannot be read); returns what was removed, with
/// the layout found.
pub fn remove_mismatched(pin_dir: &Path, names: &[&str]) -> Result<Vec<(String, String)>> {
    let mut removed = Vec::new();
    for name in names {
        let path = pin_dir.join(name);
        let Some(want) = expected(name) else {
            continue;
        };
        if !path.exists() {
            continue;
        }
        let found = match pinned(&path) {
            Ok(found) if found == want => continue,
            Ok(found) => format!("{found:?}"),
            Err(e) => format!("unreadable ({e:#})"),
        };
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        removed.push((name.to_string(), found));
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_map_of_the_program_has_a_layout() {
        for name in [
            map_names::ANSWERS,
            map_names::LISTEN_ADDRS,
            map_names::INTERFACES,
            map_names::INTERFACE_SLOTS,
            map_names::HEARTBEAT,
            map_names::COUNTERS,
            map_names::PRESENCE,
        ] {
            assert!(expected(name).is_some(), "{name}");
        }
        assert!(expected("SOMETHING_ELSE").is_none());
    }
}
