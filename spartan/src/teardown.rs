//! `spartan down`: what Spartan added to the node goes, what was there
//! before stays, and both are said.

use anyhow::Result;

use crate::{config::Config, daemon::added_record, fastpath::FastPath, iface};

/// Whether `down` also removes the listen addresses and the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interfaces {
    Remove,
    Keep,
}

/// Detaches the XDP program, removes the map pins and (with
/// [`Interfaces::Remove`]) the addresses and device Spartan recorded
/// adding. Returns one line per thing done or kept.
pub async fn down(config: &Config, interfaces: Interfaces) -> Result<Vec<String>> {
    let mut said = Vec::new();
    let pin_dir = &config.xdp.pin_dir;
    let detached = FastPath::detach_all(pin_dir)?;
    let had_pins = pin_dir.exists();
    FastPath::remove_pins(pin_dir)?;
    if detached.is_empty() {
        said.push(format!("XDP: attached nowhere under {}", pin_dir.display()));
    } else {
        said.push(format!(
            "removed: the XDP program from {}",
            detached.join(", ")
        ));
    }
    if had_pins {
        said.push(format!("removed: the map pins under {}", pin_dir.display()));
    }
    if interfaces == Interfaces::Keep {
        said.push("kept: the listen addresses and any device (--no-interface)".into());
        return Ok(said);
    }
    let record = added_record(config);
    let added = iface::Added::load(&record);
    iface::remove(&added).await?;
    let _ = std::fs::remove_file(&record);
    let list = |addrs: &mut dyn Iterator<Item = String>| addrs.collect::<Vec<_>>().join(", ");
    if added.device {
        said.push(format!(
            "removed: the {} device with its addresses",
            iface::DEVICE
        ));
    } else if !added.addresses.is_empty() {
        said.push(format!(
            "removed: {} from {}",
            list(&mut added.addresses.iter().map(|a| a.to_string())),
            added.link
        ));
    }
    let kept = list(
        &mut config
            .listen_addresses
            .iter()
            .filter(|a| !added.device && !added.addresses.contains(a))
            .map(|a| a.to_string()),
    );
    if !kept.is_empty() {
        said.push(format!(
            "kept: {kept} (not added by Spartan, or already gone)"
        ));
    }
    Ok(said)
}
