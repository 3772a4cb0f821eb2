//! The load generator: dnsperf at full speed or at a fixed rate, with
//! what it cost the server.

use std::{path::Path, process::Stdio};

use anyhow::{Context, Result, bail};

use super::{
    measure::{context_switches, cpu_split, prog_stats_in, run_time_ns},
    netns::{ADDR, CLIENT, NODE, ns},
};

/// What one dnsperf run showed.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunResult {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    pub qps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub slower_than_1s: u64,
    pub server_cpu_us_per_query: f64,
    /// The part of it spent in the server's own code (utime).
    pub server_user_us_per_query: f64,
    /// Context switches of the server's threads per query.
    pub server_switches_per_query: f64,
    pub xdp_ns_per_run: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// How dnsperf drives the server.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// As fast as it can with 100 queries outstanding (max qps).
    Max,
    /// A fixed rate, with up to 20,000 outstanding so that a stalled
    /// upstream shows up as latency and loss instead of stopping the sender
    /// (with few outstanding, dnsperf waits on the stalled queries and the
    /// stall hides as a lower rate).
    Rate(u32),
}

/// Where dnsperf runs and what it measures besides itself.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The namespace dnsperf runs in.
    pub client: &'static str,
    /// The address it asks.
    pub server: &'static str,
    /// The namespace whose XDP programs are timed (bpf stats).
    pub xdp_netns: &'static str,
}

/// The lab's client asking the system under test in the node namespace.
pub const LAB: Target = Target {
    client: CLIENT,
    server: ADDR,
    xdp_netns: NODE,
};

/// Runs dnsperf from `target.client` for `seconds` on `queries` (its
/// report's summary kept under `dir` as `<label>.dnsperf.txt`, the
/// per-query latency lines dropped once read), with the CPU the
/// server (`server_pid`, 0 for none) spent and the XDP programs' cost per
/// run over the same time.
pub fn dnsperf(
    target: Target,
    dir: &Path,
    label: &str,
    queries: &[&str],
    seconds: u32,
    load: Load,
    server_pid: u32,
) -> Result<RunResult> {
    let qfile = dir.join(format!("{label}.queries"));
    std::fs::write(&qfile, queries.join("\n") + "\n")?;
    let verbose = dir.join(format!("{label}.dnsperf.txt"));
    let out_file = std::fs::File::create(&verbose)?;
    let cpu0 = cpu_split(server_pid);
    let run0 = run_time_ns(server_pid);
    let switches0 = context_switches(server_pid);
    let bpf0 = prog_stats_in(target.xdp_netns);
    let load_args: Vec<String> = match load {
        Load::Max => vec!["-q".into(), "100".into()],
        Load::Rate(qps) => vec!["-q".into(), "20000".into(), "-Q".into(), qps.to_string()],
    };
    let status = ns(target.client, "dnsperf")
        .args([
            "-s",
            target.server,
            "-l",
            &seconds.to_string(),
            "-t",
            "2",
            "-v",
        ])
        .args(&load_args)
        .arg("-d")
        .arg(&qfile)
        .stdout(out_file)
        .stderr(Stdio::null())
        .status()
        .context("running dnsperf")?;
    if !status.success() {
        bail!("dnsperf failed ({status})");
    }
    let cpu1 = cpu_split(server_pid);
    let run1 = run_time_ns(server_pid);
    let switches1 = context_switches(server_pid);
    let bpf1 = prog_stats_in(target.xdp_netns);
    let text = std::fs::read_to_string(&verbose)?;
    let field = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let mut latencies: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|s| s * 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    // The per-query lines are read; the summary is what the run keeps (a
    // run's lines took ~150 MB of disk per `--userspace-only` round).
    let summary: String = text
        .lines()
        .filter(|l| !l.starts_with("> "))
        .flat_map(|l| [l, "\n"])
        .collect();
    std::fs::write(&verbose, summary).context("trimming dnsperf's report")?;
    let completed = field("Queries completed:") as u64;
    let xdp_ns_per_run = match (bpf0, bpf1) {
        (Some((c0, t0)), Some((c1, t1))) if c1 > c0 => Some((t1 - t0) as f64 / (c1 - c0) as f64),
        _ => None,
    };
    Ok(RunResult {
        sent: field("Queries sent:") as u64,
        completed,
        lost: field("Queries lost:") as u64,
        qps: field("Queries per second:"),
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        p999_ms: percentile(&latencies, 0.999),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        slower_than_1s: latencies.iter().filter(|l| **l > 1000.0).count() as u64,
        server_cpu_us_per_query: match (run0, run1) {
            (Some(r0), Some(r1)) if r1 >= r0 => (r1 - r0) as f64 / 1e3,
            _ => (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1) * 1e6,
        } / completed.max(1) as f64,
        server_user_us_per_query: (cpu1.0 - cpu0.0) * 1e6 / completed.max(1) as f64,
        server_switches_per_query: switches1.saturating_sub(switches0) as f64
            / completed.max(1) as f64,
        xdp_ns_per_run,
    })
}
