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

/// Creates the dummy device (or falls back to `lo`), brings it up and puts
/// `addrs` on it as /32s. Everything that exists already is left as it is.
pub async fn ensure(addrs: &[Ipv4Addr]) -> Result<Placement> {
    let handle = connect()?;
    let placement = match link_index(&handle, DEVICE).await? {
        Some(_) => Placement::Dummy,
        None => match handle
            .link()
            .add(LinkDummy::new(DEVICE).build())
            .execute()
            .await
        {
            Ok(()) => Placement::Dummy,
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
            Ok(()) => {}
            Err(e) if errno(&e) == Some(libc::EEXIST) => {}
            Err(e) => return Err(anyhow!("adding {addr}/32 to {name}: {e}")),
        }
    }
    Ok(placement)
}

/// Removes what [`ensure`] added: the dummy device (with its addresses), or
/// the addresses from `lo`. Missing pieces are fine.
pub async fn remove(addrs: &[Ipv4Addr]) -> Result<()> {
    let handle = connect()?;
    if let Some(index) = link_index(&handle, DEVICE).await? {
        handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(|e| anyhow!("deleting {DEVICE}: {e}"))?;
    }
    if let Some(lo) = link_index(&handle, "lo").await? {
        for addr in addrs {
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
                Err(e) => return Err(anyhow!("removing {addr}/32 from lo: {e}")),
            }
        }
    }
    Ok(())
}
