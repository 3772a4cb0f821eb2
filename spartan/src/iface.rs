//! The `spartan` interface: a dummy device holding the listen addresses
//! (198.51.100.1-3/32), created through netlink. Where the kernel has no
//! dummy support the addresses go on `lo` instead. Creating twice is fine;
//! removing takes away only what Spartan added.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, anyhow};
use futures::TryStreamExt;
use rtnetlink::{AddressMessageBuilder, Handle, LinkDummy, LinkUnspec, new_connection};

/// Name of the dummy device.
pub const DEVICE: &str = "spartan";

/// Where the listen addresses ended up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// On the `spartan` dummy device.
    Dummy,
    /// On `lo`: this kernel has no dummy device support.
    Loopback,
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(Some(link.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(anyhow!("looking up {name}: {e}")),
    }
}

fn connect() -> Result<Handle> {
    let (connection, handle, _) = new_connection().context("opening a netlink socket")?;
    tokio::spawn(connection);
    Ok(handle)
}

/// What Spartan itself added to the node (what was there before is not
/// its to remove). Kept in /run/spartan across restarts, merged.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Added {
    /// The `spartan` dummy device was created.
    pub device: bool,
    /// The device the addresses went on.
    pub link: String,
    /// Addresses that were not there before.
    pub addresses: Vec<Ipv4Addr>,
}

impl Added {
    /// The record at `path` (empty when there is none).
    pub fn load(path: &std::path::Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Adds `more` to the record at `path`.
    pub fn record(path: &std::path::Path, more: &Added) -> Result<()> {
        let mut all = Self::load(path);
        all.device |= more.device;
        if !more.link.is_empty() {
            all.link = more.link.clone();
        }
        for a in &more.addresses {
            if !all.addresses.contains(a) {
                all.addresses.push(*a);
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string(&all)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Creates the dummy device (or falls back to `lo`), brings it up and puts
/// `addrs` on it as /32s. Everything that exists already is left as it is;
/// what was added is returned.
pub async fn ensure(addrs: &[Ipv4Addr]) -> Result<(Placement, Added)> {
    let handle = connect()?;
    let mut added = Added::default();
    let placement = match link_index(&handle, DEVICE).await? {
        Some(_) => Placement::Dummy,
        None => match handle
            .link()
            .add(LinkDummy::new(DEVICE).build())
            .execute()
            .await
        {
            Ok(()) => {
                added.device = true;
                Placement::Dummy
            }
            Err(e) if errno(&e) == Some(libc::EEXIST) => Placement::Dummy,
            // No dummy driver in this kernel (EOPNOTSUPP), or not loadable.
            Err(e) => {
                tracing::info!(error = %e, "no dummy device support: listen addresses go on lo");
                Placement::Loopback
            }
        },
    };
    let name = match placement {
        Placement::Dummy => DEVICE,
        Placement::Loopback => "lo",
    };
    added.link = name.to_string();
    let index = link_index(&handle, name)
        .await?
        .ok_or_else(|| anyhow!("{name} vanished"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| anyhow!("bringing {name} up: {e}"))?;
    for addr in addrs {
        match handle
            .address()
            .add(index, IpAddr::V4(*addr), 32)
            .execute()
            .await
        {
            Ok(()) => added.addresses.push(*addr),
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(anyhow!("adding {addr}/32 to {name}: {e}")),
        }
    }
    Ok((placement, added))
}

/// Removes what [`ensure`] recorded adding: the dummy device (with its
/// addresses) if it created it, else the addresses it added to their link.
/// Missing pieces are fine.
pub async fn remove(added: &Added) -> Result<()> {
    let handle = connect()?;
    if added.device
        && let Some(index) = link_index(&handle, DEVICE).await?
    {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| anyhow!("deleting {DEVICE}: {e}"))?;
    }
    let link = if added.link.is_empty() {
        "lo"
    } else {
        &added.link
    };
    if !added.device
        && let Some(lo) = link_index(&handle, link).await?
    {
        for addr in &added.addresses {
            let message = AddressMessageBuilder::<Ipv4Addr>::new()
                .index(lo)
                .address(*addr, 32)
                .build();
            match handle.address().del(message).execute().await {
                Ok(()) => {}
                // Not there: nothing to remove.
                Err(e)
                    if matches!(
                        errno(&e),
                        Some(libc::EADDRNOTAVAIL) | Some(libc::ENOENT) | Some(libc::ESRCH)
                    ) => {}
                Err(e) => return Err(anyhow!("removing {addr}/32 from {link}: {e}")),
            }
        }
    }
    Ok(())
}
