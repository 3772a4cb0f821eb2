//! The kernel path by topology: `ready.spartan` from a host process (over
//! `lo`), from a container on a routed veth and from a container on a
//! bridge, each container plain (nothing attached on its side). For each:
//! answers per second at full load, and at 2,000 qps the XDP program's
//! cost per run (bpf stats) and the daemon's CPU per query (it should do
//! nothing).

use std::{
    path::Path,
    process::{Child, Stdio},
};

use anyhow::{Context, Result};

use crate::lab::{
    Load,
    load::{Target, dnsperf},
    netns::{Namespaces, ip, route_to_spartan, wait_for},
    ns, spartan_down, terminate,
};

const NODE: &str = "sbt-node";
const ROUTED: &str = "sbt-routed";
const BRIDGED: &str = "sbt-bridged";
const PINS: &str = "/sys/fs/bpf/spartan-topo";
const SERVER: &str = "198.51.100.1";

/// One topology's figures.
pub struct Row {
    pub topology: &'static str,
    pub max_qps: f64,
    pub answered: u64,
    pub ns_per_run: f64,
    pub daemon_us_per_query: f64,
}

/// The namespaces and, first, the daemon's pins: removed on drop.
struct Topology {
    bin: std::path::PathBuf,
    _namespaces: Namespaces,
}

impl Drop for Topology {
    fn drop(&mut self) {
        spartan_down(&self.bin, PINS);
    }
}

fn build(bin: &Path) -> Result<Topology> {
    let topo = Topology {
        bin: bin.to_path_buf(),
        _namespaces: Namespaces::create(&[NODE, ROUTED, BRIDGED])?,
    };
    ip(&[
        "-n",
        NODE,
        "addr",
        "add",
        &format!("{SERVER}/32"),
        "dev",
        "lo",
    ])?;
    // Routed: one veth, the node's end holds the gateway address.
    ip(&[
        "link", "add", "sbt-r0", "netns", ROUTED, "type", "veth", "peer", "name", "sbt-rn",
        "netns", NODE,
    ])?;
    ip(&["-n", ROUTED, "addr", "add", "192.0.2.1/24", "dev", "sbt-r0"])?;
    ip(&["-n", NODE, "addr", "add", "192.0.2.2/24", "dev", "sbt-rn"])?;
    // Bridged: the container's veth is a port of a bridge holding the gateway.
    ip(&["-n", NODE, "link", "add", "sbt-br", "type", "bridge"])?;
    ip(&["-n", NODE, "addr", "add", "192.0.3.2/24", "dev", "sbt-br"])?;
    ip(&[
        "link", "add", "sbt-b0", "netns", BRIDGED, "type", "veth", "peer", "name", "sbt-bp",
        "netns", NODE,
    ])?;
    ip(&["-n", NODE, "link", "set", "sbt-bp", "master", "sbt-br"])?;
    ip(&[
        "-n",
        BRIDGED,
        "addr",
        "add",
        "192.0.3.11/24",
        "dev",
        "sbt-b0",
    ])?;
    for (n, dev) in [
        (ROUTED, "sbt-r0"),
        (NODE, "sbt-rn"),
        (NODE, "sbt-br"),
        (NODE, "sbt-bp"),
        (BRIDGED, "sbt-b0"),
    ] {
        ip(&["-n", n, "link", "set", dev, "up"])?;
    }
    route_to_spartan(ROUTED, "192.0.2.2")?;
    route_to_spartan(BRIDGED, "192.0.3.2")?;
    Ok(topo)
}

fn start_daemon(bin: &Path) -> Result<Child> {
    let child = ns(NODE, bin.to_str().context("a UTF-8 path")?)
        .args([
            "run",
            "--listen",
            SERVER,
            "--no-interface",
            "--detach-on-exit",
        ])
        .args(["--upstream", "127.0.0.1:5353", "--pin-dir", PINS])
        .args(["--xdp-interface", "sbt-rn,sbt-br"])
        .env("SPARTAN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting spartan")?;
    wait_for(BRIDGED, SERVER, "ready.spartan", "127.0.0.1")
        .context("spartan did not answer in the topology bench")?;
    Ok(child)
}

/// Runs the three topologies, `seconds` per measurement.
pub fn run(bin: &Path, dir: &Path, seconds: u32) -> Result<Vec<Row>> {
    let _topo = build(bin)?;
    let mut daemon = start_daemon(bin)?;
    // The daemon stops however the measurements end.
    let rows = measure(dir, seconds, daemon.id());
    terminate(&mut daemon);
    rows
}

/// The three topologies against the daemon `pid`.
fn measure(dir: &Path, seconds: u32, pid: u32) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (topology, client) in [
        ("host process over lo", NODE),
        ("container, routed veth", ROUTED),
        ("container, bridge", BRIDGED),
    ] {
        let target = Target {
            client,
            server: SERVER,
            xdp_netns: NODE,
        };
        let queries = ["ready.spartan A"];
        let label = format!("topology-{client}");
        let max = dnsperf(target, dir, &label, &queries, seconds, Load::Max, 0)?;
        let fixed = dnsperf(
            target,
            dir,
            &label,
            &queries,
            seconds,
            Load::Rate(2000),
            pid,
        )?;
        rows.push(Row {
            topology,
            max_qps: max.qps,
            answered: fixed.completed,
            ns_per_run: fixed.xdp_ns_per_run.unwrap_or(0.0),
            daemon_us_per_query: fixed.server_cpu_us_per_query,
        });
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    crate::lab::report::table(
        &[
            "topology",
            "answers/s (max)",
            "answered at 2000 qps",
            "XDP ns/run (bpf stats)",
            "daemon µs/query",
        ],
        rows.iter().map(|r| {
            vec![
                r.topology.to_string(),
                format!("{:.0}", r.max_qps),
                r.answered.to_string(),
                format!("{:.0}", r.ns_per_run),
                format!("{:.1}", r.daemon_us_per_query),
            ]
        }),
    )
}
