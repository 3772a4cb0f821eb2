//! Interfaces follow the containers. `[xdp] interfaces` holds names and
//! patterns (`veth*`, `docker0`); the XDP program is attached to every
//! interface that matches, those present at start and those that appear
//! later, released (its link pin removed) when the interface goes, and
//! attached anew when an interface is re-created under the same name.
//! Netlink link events drive it: the subscription is made before the
//! existing links are listed, so that none falls between the two.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use rtnetlink::{
    MulticastGroup,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage},
    },
};

use crate::fastpath::FastPath;

/// Does `name` match `pattern` (`*` any run of characters, `?` one)?
pub fn matches(pattern: &str, name: &str) -> bool {
    fn glob(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], n) || (!n.is_empty() && glob(p, &n[1..])),
            (Some(b'?'), Some(_)) => glob(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => glob(&p[1..], &n[1..]),
            _ => false,
        }
    }
    glob(pattern.as_bytes(), name.as_bytes())
}

/// Interfaces the program is on now, by name, with their index.
pub type Attached = Arc<Mutex<BTreeMap<String, u32>>>;

/// The running watcher.
pub struct LinkWatcher {
    pub attached: Attached,
    task: tokio::task::JoinHandle<()>,
}

impl LinkWatcher {
    /// Subscribes to link events, attaches to the matching interfaces that
    /// exist now (before returning), then follows the events in a task.
    pub async fn start(
        program: Arc<Mutex<FastPath>>,
        pin_dir: PathBuf,
        patterns: Vec<String>,
        attached: Attached,
    ) -> Result<Self> {
        let (connection, _, mut events) =
            rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
                .context("subscribing to netlink link events")?;
        let subscription = tokio::spawn(connection);
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        let lister = tokio::spawn(connection);
        let existing: Vec<LinkMessage> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .context("listing the interfaces")?;
        lister.abort();
        let watch = Watch {
            program,
            pin_dir,
            patterns,
            attached: attached.clone(),
        };
        for link in &existing {
            watch.appeared(link);
        }
        let task = tokio::spawn(async move {
            let _subscription = AbortOnDrop(subscription);
            while let Some((message, _)) = events.next().await {
                match message.payload {
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                        watch.appeared(&link)
                    }
                    NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                        watch.gone(&link)
                    }
                    _ => {}
                }
            }
            tracing::error!("netlink link events ended: new interfaces are no longer followed");
        });
        Ok(Self { attached, task })
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Watch {
    program: Arc<Mutex<FastPath>>,
    pin_dir: PathBuf,
    patterns: Vec<String>,
    attached: Attached,
}

fn name_of(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.as_str()),
        _ => None,
    })
}

impl Watch {
    fn wanted(&self, name: &str) -> bool {
        name != "lo" && self.patterns.iter().any(|p| matches(p, name))
    }

    /// A link appeared or changed: attach when it matches and is not
    /// attached already under this index.
    fn appeared(&self, link: &LinkMessage) {
        let Some(name) = name_of(link) else { return };
        let index = link.header.index;
        if !self.wanted(name) {
            return;
        }
        let mut attached = self.attached.lock().expect("attached lock");
        if attached.get(name) == Some(&index) {
            return;
        }
        match self.program.lock().expect("program lock").attach(name) {
            Ok(mode) => {
                tracing::info!(interface = %name, %mode, "XDP program attached");
                attached.insert(name.to_string(), index);
            }
            Err(e) => tracing::error!(
                interface = %name,
                error = format!("{e:#}"),
                "XDP not attached: queries through this interface go to userspace"
            ),
        }
    }

    /// A link went away: its (defunct) link pin goes too.
    fn gone(&self, link: &LinkMessage) {
        let Some(name) = name_of(link) else { return };
        let mut attached = self.attached.lock().expect("attached lock");
        if attached.get(name) != Some(&link.header.index) {
            return;
        }
        attached.remove(name);
        match FastPath::detach(&self.pin_dir, name) {
            Ok(_) => tracing::info!(interface = %name, "interface gone: XDP released"),
            Err(e) => {
                tracing::warn!(interface = %name, error = format!("{e:#}"), "removing the link pin failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_match_names() {
        assert!(matches("veth*", "veth1a2b"));
        assert!(matches("veth*", "veth"));
        assert!(!matches("veth*", "eth0"));
        assert!(matches("docker0", "docker0"));
        assert!(!matches("docker0", "docker01"));
        assert!(matches("br-?", "br-1"));
        assert!(!matches("br-?", "br-12"));
        assert!(matches("*", "anything"));
        assert!(matches("m*-*", "mesos-cni-0"));
    }
}
