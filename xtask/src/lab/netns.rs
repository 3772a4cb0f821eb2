//! Namespaces and links: the commands run inside them, the lab's three
//! namespaces (client, node, upstreams) and their removal, the upstreams'
//! blackhole, and the bounded waits for an answer.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::systems::{start_nsd, terminate};
use crate::util::run;

pub const CLIENT: &str = "sb-client";
pub const NODE: &str = "sb-node";
pub const UP: &str = "sb-up";
/// The system under test's address in the node namespace.
pub const ADDR: &str = "198.51.100.1";
pub const UPSTREAMS: [&str; 3] = ["198.18.0.1", "198.18.0.2", "198.18.0.3"];
pub const NODE_TO_CLIENT: &str = "sbn-c";
const CLIENT_TO_NODE: &str = "sbc-n";

/// `program` run inside namespace `name`.
pub fn ns(name: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{name}"))
        .arg("--")
        .arg(program);
    cmd
}

pub fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args).stdout(Stdio::null()))
}

/// Routes Spartan's addresses (198.51.100.0/24) from namespace `netns`
/// through `gateway`: a container's way to the node's DNS.
pub fn route_to_spartan(netns: &str, gateway: &str) -> Result<()> {
    ip(&[
        "-n",
        netns,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        gateway,
    ])
}

/// Namespaces of a bench's own, created afresh (an earlier run's leftovers
/// removed first, each with `lo` up) and removed on drop.
pub struct Namespaces(&'static [&'static str]);

impl Namespaces {
    pub fn create(names: &'static [&'static str]) -> Result<Self> {
        let namespaces = Namespaces(names);
        namespaces.remove();
        for n in names {
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        Ok(namespaces)
    }

    fn remove(&self) {
        for n in self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove();
    }
}

/// The namespaces and links; all removed on drop.
pub struct Lab {
    pub dir: PathBuf,
    upstreams: Vec<Child>,
    // Dropped after the upstreams are stopped (fields drop in order).
    _namespaces: Namespaces,
}

impl Lab {
    pub fn new(dir: &Path) -> Result<Self> {
        let mut lab = Lab {
            _namespaces: Namespaces::create(&[CLIENT, NODE, UP])?,
            dir: dir.to_path_buf(),
            upstreams: Vec::new(),
        };
        ip(&[
            "link",
            "add",
            CLIENT_TO_NODE,
            "netns",
            CLIENT,
            "type",
            "veth",
            "peer",
            "name",
            NODE_TO_CLIENT,
            "netns",
            NODE,
        ])?;
        ip(&[
            "link", "add", "sbn-u", "netns", NODE, "type", "veth", "peer", "name", "sbu-n",
            "netns", UP,
        ])?;
        ip(&[
            "-n",
            CLIENT,
            "addr",
            "add",
            "192.0.2.1/24",
            "dev",
            CLIENT_TO_NODE,
        ])?;
        ip(&[
            "-n",
            NODE,
            "addr",
            "add",
            "192.0.2.2/24",
            "dev",
            NODE_TO_CLIENT,
        ])?;
        ip(&["-n", NODE, "addr", "add", "198.18.0.254/24", "dev", "sbn-u"])?;
        ip(&[
            "-n",
            NODE,
            "addr",
            "add",
            &format!("{ADDR}/32"),
            "dev",
            "lo",
        ])?;
        for a in UPSTREAMS {
            ip(&["-n", UP, "addr", "add", &format!("{a}/24"), "dev", "sbu-n"])?;
        }
        for (n, dev) in [
            (CLIENT, CLIENT_TO_NODE),
            (NODE, NODE_TO_CLIENT),
            (NODE, "sbn-u"),
            (UP, "sbu-n"),
        ] {
            ip(&["-n", n, "link", "set", dev, "up"])?;
        }
        route_to_spartan(CLIENT, "192.0.2.2")?;
        // The client is a container as it really is: a plain veth, nothing
        // attached on its side (Spartan puts generic XDP on the node's end).
        std::fs::create_dir_all(dir)?;
        for (i, a) in UPSTREAMS.iter().enumerate() {
            lab.upstreams.push(start_nsd(dir, a, i + 1)?);
        }
        Ok(lab)
    }

    /// Blackholes every upstream at once (every master down).
    pub fn blackhole_all() -> Result<()> {
        Self::blackhole_only(&UPSTREAMS)
    }

    /// Drops everything to `addr` in the upstreams' namespace (a silent
    /// blackhole), or, with `None`, lifts every such rule.
    pub fn blackhole(addr: Option<&str>) -> Result<()> {
        Self::blackhole_only(addr.as_slice())
    }

    fn blackhole_only(addrs: &[&str]) -> Result<()> {
        let _ = ns(UP, "iptables").args(["-F", "INPUT"]).status();
        for a in addrs {
            for proto in ["udp", "tcp"] {
                run(ns(UP, "iptables").args([
                    "-A", "INPUT", "-d", a, "-p", proto, "--dport", "53", "-j", "DROP",
                ]))?;
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.upstreams {
            terminate(child);
        }
    }
}

/// Waits (bounded) until `server` answers `name` with `want`.
pub fn wait_for(netns: &str, server: &str, name: &str, want: &str) -> Result<()> {
    wait_until(netns, server, name, |answer| answer == want)
        .map_err(|e| e.context(format!("{server} does not answer {name} with {want}")))
}

/// Waits (bounded) until `server` answers `name` from inside `netns`.
pub fn wait_answer(netns: &str, server: &str, name: &str) -> Result<()> {
    wait_until(netns, server, name, |answer| !answer.is_empty())
        .map_err(|e| e.context(format!("{server} does not answer {name}")))
}

/// Asks `server` for `name` with dig from `netns` until `good` accepts the
/// short answer, for at most 15 s.
fn wait_until(netns: &str, server: &str, name: &str, good: impl Fn(&str) -> bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ns(netns, "dig")
            .args([&format!("@{server}"), "+short", "+time=1", "+tries=1", name])
            .output()?;
        if good(String::from_utf8_lossy(&out.stdout).trim()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no such answer within 15 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
