//! The answer cache in the lab: a node-like workload and every master down.
//!
//! Workload: 2,000 names served by the NSD upstreams, half Mesos-DNS-shaped
//! (`app-N.svc.mesos`, TTL 60 as Mesos-DNS serves them), half ordinary
//! (`host-N.node.example`, TTLs 5, 30, 60 and 300 s), asked with a Zipf
//! popularity (s = 1) at a fixed rate. Every system with its cache on;
//! Spartan also with `--no-cache`, the original behaviour. Measured: hit
//! ratio by layer (Spartan: kernel and userspace counters), server CPU per
//! query, p99, upstream packets per client query (an iptables counter in
//! the upstreams' namespace).
//!
//! Masters down: the `*.mesos` half of the workload, warmed up, then every
//! upstream blackholed for the run: answers per system.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::lab::{
    Lab, Load, NODE, RunResult, SPARTAN_PINS, System, UP, dnsperf, load::LAB, ns, with_system,
};

pub const MESOS_NAMES: usize = 1000;
pub const OTHER_NAMES: usize = 1000;
const OTHER_TTLS: [u32; 4] = [5, 30, 60, 300];
const RATE: u32 = 2000;

/// The workload's zones, for the lab's NSD upstreams: (zone, zone file).
pub fn zones() -> Vec<(&'static str, String)> {
    let mut mesos = String::from(
        "$ORIGIN svc.mesos.\n$TTL 60\n@ IN SOA ns1.mesos. root.mesos. 1 60 60 600 5\n@ IN NS ns1.mesos.\n",
    );
    for i in 0..MESOS_NAMES {
        mesos.push_str(&format!(
            "app-{i} IN A 10.{}.{}.{}\n",
            1 + i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let mut other = String::from(
        "$ORIGIN node.example.\n$TTL 300\n@ IN SOA ns1.node.example. root.node.example. 1 60 60 600 5\n@ IN NS ns1.node.example.\nns1 IN A 198.18.0.1\n",
    );
    for i in 0..OTHER_NAMES {
        let ttl = OTHER_TTLS[i % OTHER_TTLS.len()];
        other.push_str(&format!(
            "host-{i} {ttl} IN A 172.16.{}.{}\n",
            i / 256,
            i % 256
        ));
    }
    vec![("svc.mesos", mesos), ("node.example", other)]
}

/// xorshift64*: a fixed-seed generator, so every system gets the same
/// query sequence.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `count` queries over `names` (most popular first) with a Zipf (s = 1)
/// popularity.
fn zipf(names: &[String], count: usize, seed: u64) -> Vec<String> {
    let weights: Vec<f64> = (1..=names.len()).map(|k| 1.0 / k as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(names.len());
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let u = rng.next_f64();
            let i = cdf.partition_point(|c| *c < u).min(names.len() - 1);
            format!("{} A", names[i])
        })
        .collect()
}

/// Names by popularity rank, the two kinds interleaved.
fn ranked(mesos: bool, other: bool) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..MESOS_NAMES.max(OTHER_NAMES) {
        if mesos && i < MESOS_NAMES {
            out.push(format!("app-{i}.svc.mesos"));
        }
        if other && i < OTHER_NAMES {
            out.push(format!("host-{i}.node.example"));
        }
    }
    out
}

/// Starts counting the DNS datagrams the upstreams receive (raw table, so
/// that the blackhole rules in INPUT do not touch it).
fn count_upstream_queries() -> Result<()> {
    let _ = ns(UP, "iptables")
        .args(["-t", "raw", "-F", "PREROUTING"])
        .status();
    crate::util::run(ns(UP, "iptables").args([
        "-t",
        "raw",
        "-A",
        "PREROUTING",
        "-p",
        "udp",
        "--dport",
        "53",
    ]))?;
    Ok(())
}

fn upstream_queries() -> u64 {
    let out = ns(UP, "iptables")
        .args(["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"])
        .output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.contains("dpt:53"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Spartan's cache hits so far: (kernel, userspace), from `spartan stats`.
fn spartan_hits(bin: &Path) -> (u64, u64) {
    let out = ns(NODE, bin.to_str().unwrap())
        .args([
            "stats",
            "--pin-dir",
            SPARTAN_PINS,
            "--http",
            "127.0.0.1:62080",
        ])
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let kernel = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("answered_from_cache"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let user = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"cache_hits\":"))
        .and_then(|v| v.trim().trim_end_matches(',').parse().ok())
        .unwrap_or(0);
    (kernel, user)
}

/// NOERROR answers in a dnsperf run's report.
fn noerror(dir: &Path, label: &str) -> u64 {
    let text =
        std::fs::read_to_string(dir.join(format!("{label}.dnsperf.txt"))).unwrap_or_default();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Response codes:"))
        .and_then(|l| {
            l.split("NOERROR")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// One system under the workload.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkloadRow {
    pub system: String,
    pub run: RunResult,
    pub upstream_per_query: f64,
    /// Spartan only: (kernel, userspace) hit ratios.
    pub hits: Option<(f64, f64)>,
}

/// Every system during the masters' outage.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OutageRow {
    pub system: String,
    pub asked: u64,
    pub answered_noerror: u64,
    pub p99_ms: f64,
    /// Upstream packets per client query while warming up (`*.mesos` only).
    pub warm_upstream_per_query: f64,
}

pub struct Results {
    pub workload: Vec<WorkloadRow>,
    pub outage: Vec<OutageRow>,
    pub mesos_share: f64,
    pub seconds: u32,
    pub outage_seconds: u32,
}

const WORKLOAD_SYSTEMS: [System; 6] = [
    System::SpartanKernel,
    System::SpartanUser,
    System::SpartanNoCache,
    System::DnsdistCache,
    System::Unbound,
    System::DnsmasqCache,
];

const OUTAGE_SYSTEMS: [System; 5] = [
    System::SpartanKernel,
    System::SpartanNoCache,
    System::DnsdistCache,
    System::Unbound,
    System::DnsmasqCache,
];

pub fn run(bin: &Path, lab: &Lab, quick: bool) -> Result<Results> {
    let seconds = if quick { 8 } else { 30 };
    let (warm, outage_seconds) = if quick { (5, 10) } else { (15, 30) };
    let queries = zipf(&ranked(true, true), RATE as usize * seconds as usize, 7);
    let mesos_share =
        queries.iter().filter(|q| q.contains(".mesos ")).count() as f64 / queries.len() as f64;
    let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
    count_upstream_queries()?;
    Lab::blackhole(None)?;
    let mut workload = Vec::new();
    println!(
        "\n== answer cache: node-like workload, Zipf over {} names, {RATE} qps for {seconds} s",
        MESOS_NAMES + OTHER_NAMES
    );
    for system in WORKLOAD_SYSTEMS {
        let label = format!("cache-{}", system.slug());
        let (r, up0, up1, hits0, hits1) =
            with_system(bin, &lab.dir, system, &crate::lab::UPSTREAMS, |pid| {
                let up0 = upstream_queries();
                let hits0 = system.is_spartan().then(|| spartan_hits(bin));
                let r = dnsperf(LAB, &lab.dir, &label, &refs, seconds, Load::Rate(RATE), pid);
                let hits1 = system.is_spartan().then(|| spartan_hits(bin));
                (r, up0, upstream_queries(), hits0, hits1)
            })?;
        let r = r?;
        let asked = r.completed.max(1) as f64;
        let hits = match (hits0, hits1) {
            (Some((k0, u0)), Some((k1, u1))) => {
                Some(((k1 - k0) as f64 / asked, (u1 - u0) as f64 / asked))
            }
            _ => None,
        };
        let upstream_per_query = (up1 - up0) as f64 / asked;
        println!(
            "{:<28} p99 {:>8.3} ms  {:>6.1} µs/q  upstream/query {:>6.3}  hits {}",
            system.name(),
            r.p99_ms,
            r.server_cpu_us_per_query,
            upstream_per_query,
            hits.map_or("-".into(), |(k, u)| format!(
                "kernel {:.1}% userspace {:.1}%",
                k * 100.0,
                u * 100.0
            ))
        );
        workload.push(WorkloadRow {
            system: system.name().to_string(),
            run: r,
            upstream_per_query,
            hits,
        });
    }

    println!(
        "\n== answer cache: every master down for {outage_seconds} s, clients asking *.mesos at {RATE} qps"
    );
    let mesos = zipf(&ranked(true, false), RATE as usize * warm as usize, 11);
    let mesos_refs: Vec<&str> = mesos.iter().map(String::as_str).collect();
    let down = zipf(
        &ranked(true, false),
        RATE as usize * outage_seconds as usize,
        13,
    );
    let down_refs: Vec<&str> = down.iter().map(String::as_str).collect();
    let mut outage = Vec::new();
    for system in OUTAGE_SYSTEMS {
        Lab::blackhole(None)?;
        let label = format!("outage-{}", system.slug());
        let (warm_run, r, up0, up1) =
            with_system(bin, &lab.dir, system, &crate::lab::UPSTREAMS, |pid| {
                let up0 = upstream_queries();
                let warm_label = format!("outage-warm-{}", system.slug());
                let warm_run = dnsperf(
                    LAB,
                    &lab.dir,
                    &warm_label,
                    &mesos_refs,
                    warm,
                    Load::Rate(RATE),
                    pid,
                );
                let up1 = upstream_queries();
                let r = Lab::blackhole_all().and_then(|()| {
                    dnsperf(
                        LAB,
                        &lab.dir,
                        &label,
                        &down_refs,
                        outage_seconds,
                        Load::Rate(RATE),
                        pid,
                    )
                });
                (warm_run, r, up0, up1)
            })?;
        Lab::blackhole(None)?;
        let warm_run = warm_run?;
        let r = r?;
        let row = OutageRow {
            system: system.name().to_string(),
            asked: r.sent,
            answered_noerror: noerror(&lab.dir, &label),
            p99_ms: r.p99_ms,
            warm_upstream_per_query: (up1 - up0) as f64 / warm_run.completed.max(1) as f64,
        };
        println!(
            "{:<28} answered {:>6} of {:>6}  p99 {:>8.1} ms  (warm-up upstream/query {:.3})",
            row.system, row.answered_noerror, row.asked, row.p99_ms, row.warm_upstream_per_query
        );
        outage.push(row);
    }
    let _ = ns(UP, "iptables")
        .args(["-t", "raw", "-F", "PREROUTING"])
        .status();
    let _ = Command::new("true").status();
    Ok(Results {
        workload,
        outage,
        mesos_share,
        seconds,
        outage_seconds,
    })
}

/// The section of RESULTS.md: both tables and the model of the masters'
/// load in a 10,000-node cluster.
pub fn markdown(r: &Results) -> String {
    let mut s = format!(
        "## Answer cache: a node-like workload\n\n{} names on the NSD upstreams ({MESOS_NAMES} `app-N.svc.mesos`, TTL 60 as Mesos-DNS serves them; {OTHER_NAMES} `host-N.node.example`, TTLs 5/30/60/300 s), asked with a Zipf popularity (s = 1, {:.0}% `*.mesos`) at {RATE} qps for {} s from a cold start, every system with its cache on (Spartan also with `--no-cache`). Upstream packets: every DNS datagram the upstreams received, per client query. Hit ratios by layer from Spartan's own counters (kernel: XDP answers from the cache mirror; userspace: the daemon's cache).\n\n| system | p99 ms | server µs/query | XDP ns/run | upstream packets/query | hits: kernel | hits: userspace |\n|---|---|---|---|---|---|---|\n",
        MESOS_NAMES + OTHER_NAMES,
        r.mesos_share * 100.0,
        r.seconds
    );
    for w in &r.workload {
        let (k, u) = w.hits.map_or(("-".into(), "-".into()), |(k, u)| {
            (format!("{:.1}%", k * 100.0), format!("{:.1}%", u * 100.0))
        });
        s.push_str(&format!(
            "| {} | {:.3} | {:.1} | {} | {:.3} | {k} | {u} |\n",
            w.system,
            w.run.p99_ms,
            w.run.server_cpu_us_per_query,
            w.run
                .xdp_ns_per_run
                .map_or("-".into(), |n| format!("{n:.0}")),
            w.upstream_per_query
        ));
    }
    s.push_str(&format!(
        "\n## Answer cache: every master down\n\nThe `*.mesos` half of the workload: {} s of warm-up, then every upstream blackholed (iptables DROP in the upstreams' namespace) for {} s while clients keep asking at {RATE} qps (dnsperf, 20,000 outstanding, 2 s timeout).\n\n| system | asked | answered (NOERROR) | p99 ms | upstream packets/query while warm |\n|---|---|---|---|---|\n",
        if r.outage_seconds >= 30 { 15 } else { 5 },
        r.outage_seconds
    ));
    for o in &r.outage {
        s.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.3} |\n",
            o.system, o.asked, o.answered_noerror, o.p99_ms, o.warm_upstream_per_query
        ));
    }
    let per = |name: &str| {
        r.outage
            .iter()
            .find(|o| o.system == name)
            .map(|o| o.warm_upstream_per_query)
    };
    if let (Some(with), Some(without)) = (
        per(System::SpartanKernel.name()),
        per(System::SpartanNoCache.name()),
    ) {
        s.push_str(&format!(
            "\n### The masters' Mesos-DNS in a 10,000-node cluster\n\nEach `*.mesos` query a node's clients send costs the masters {without:.3} packets without the cache (Spartan races two of them) and {with:.3} with it (measured above, warm-up phase: {RATE} qps of {MESOS_NAMES} Zipf-popular names, TTL capped at 5 s, cold start included). The masters' load is 10,000 × (queries per node per second) × that figure, shared by the masters:\n\n| `*.mesos` queries per node per second | masters' load without cache (qps) | with cache (qps) |\n|---|---|---|\n",
        ));
        for rate in [1.0, 10.0, 100.0] {
            s.push_str(&format!(
                "| {rate:.0} | {:.0} | {:.0} |\n",
                10_000.0 * rate * without,
                10_000.0 * rate * with
            ));
        }
        s.push_str("\nWith the cache a name costs the masters about one query per 5 s per node however often it is asked, so the with-cache figure at a low per-node rate is bounded by the number of distinct hot names rather than the rate: the measured ratio is for this workload's rate and popularity.\n");
    }
    s
}
