//! The kernel path by topology: `ready.spartan` from a host process (over
//! `lo`), from a container on a routed veth and from a container on a
//! bridge, each container plain (nothing attached on its side). For each:
//! answers per second at full load, and at 2,000 qps the XDP program's
//! cost per run (bpf stats) and the daemon's CPU per query (it should do
//! nothing).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::lab::{cpu_seconds, ip, ns, prog_stats_in, terminate};

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

/// The namespaces; removed (with the daemon's pins) on drop.
struct Topology {
    bin: std::path::PathBuf,
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .args(["down", "--pin-dir", PINS, "--no-interface"])
            .output();
        for n in [NODE, ROUTED, BRIDGED] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn build(bin: &Path) -> Result<Topology> {
    for n in [NODE, ROUTED, BRIDGED] {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
    }
    let topo = Topology {
        bin: bin.to_path_buf(),
    };
    for n in [NODE, ROUTED, BRIDGED] {
        ip(&["netns", "add", n])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
    }
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
    ip(&[
        "-n",
        ROUTED,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.2.2",
    ])?;
    ip(&[
        "-n",
        BRIDGED,
        "route",
        "add",
        "198.51.100.0/24",
        "via",
        "192.0.3.2",
    ])?;
    Ok(topo)
}

fn start_daemon(bin: &Path) -> Result<Child> {
    let child = ns(NODE, bin.to_str().unwrap())
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
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let out = ns(BRIDGED, "dig")
            .args([
                &format!("@{SERVER}"),
                "+short",
                "+time=1",
                "+tries=1",
                "ready.spartan",
            ])
            .output()?;
        if String::from_utf8_lossy(&out.stdout).trim() == "127.0.0.1" {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("spartan did not answer in the topology bench")
}

/// dnsperf from `client`: (queries completed, queries per second).
fn dnsperf(client: &str, qfile: &Path, seconds: u32, rate: Option<u32>) -> Result<(u64, f64)> {
    let mut cmd = ns(client, "dnsperf");
    cmd.args(["-s", SERVER, "-l", &seconds.to_string(), "-d"])
        .arg(qfile);
    match rate {
        Some(qps) => cmd.args(["-q", "20000", "-Q", &qps.to_string()]),
        None => cmd.args(["-q", "100"]),
    };
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    Ok((
        field("Queries completed:") as u64,
        field("Queries per second:"),
    ))
}

/// Runs the three topologies, `seconds` per measurement.
pub fn run(bin: &Path, dir: &Path, seconds: u32) -> Result<Vec<Row>> {
    let _topo = build(bin)?;
    let mut daemon = start_daemon(bin)?;
    let qfile = dir.join("topology.queries");
    std::fs::write(&qfile, "ready.spartan A\n")?;
    let mut rows = Vec::new();
    for (topology, client) in [
        ("host process over lo", NODE),
        ("container, routed veth", ROUTED),
        ("container, bridge", BRIDGED),
    ] {
        let (_, max_qps) = dnsperf(client, &qfile, seconds, None)?;
        let cpu0 = cpu_seconds(daemon.id());
        let bpf0 = prog_stats_in(NODE).unwrap_or((0, 0));
        let (answered, _) = dnsperf(client, &qfile, seconds, Some(2000))?;
        let cpu1 = cpu_seconds(daemon.id());
        let bpf1 = prog_stats_in(NODE).unwrap_or((0, 0));
        let runs = bpf1.0.saturating_sub(bpf0.0);
        rows.push(Row {
            topology,
            max_qps,
            answered,
            ns_per_run: bpf1.1.saturating_sub(bpf0.1) as f64 / runs.max(1) as f64,
            daemon_us_per_query: (cpu1 - cpu0) * 1e6 / answered.max(1) as f64,
        });
    }
    terminate(&mut daemon);
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    let mut md = String::from(
        "| topology | answers/s (max) | answered at 2000 qps | XDP ns/run (bpf stats) | daemon µs/query |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {:.1} |\n",
            r.topology, r.max_qps, r.answered, r.ns_per_run, r.daemon_us_per_query
        ));
    }
    md
}
