//! `cargo xtask bench`: what the kernel path costs, beside the userspace
//! path, on this machine. See the README's Benchmarks section for what a
//! 2-core VM can show: per-query CPU at a fixed rate, not max qps.
//!
//! 1. ns per packet of the XDP program from BPF_PROG_TEST_RUN (`bench-xdp`,
//!    a binary of the tests package): beside the floor, a non-DNS frame, a
//!    miss, local hits and a cache hit.
//! 2. The lab ([`crate::lab`]): Spartan and its peers on the same client,
//!    upstreams and queries; the answer cache's workload and outage; restarts
//!    under load; the kernel path by topology; system calls per query.
//!
//! This file only orchestrates; the lab's pieces live in `lab/`.

use std::{collections::BTreeMap, fmt, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::{
    lab::{
        FORWARDED, Lab, Load, System, UPSTREAMS, dnsperf,
        load::LAB,
        measure::{Syscalls, glibc_baseline, syscalls_per_forwarded_query},
        terminate, with_system,
    },
    util::workspace_root,
};

#[derive(clap::Args)]
pub struct BenchOpts {
    /// A short smoke run.
    #[arg(long)]
    pub quick: bool,
    /// The XDP figures and the answer cache's lab only (the node-like
    /// workload and the masters' outage); its results go to
    /// `bench/runs/<date>/CACHE.md`, and RESULTS.md is left as it is.
    #[arg(long)]
    pub cache_only: bool,
    /// The userspace path against dnsdist and unbound only (a local name
    /// and forwarded names at 2,000 qps, forwarded names at max qps), in
    /// `--rounds` interleaved rounds, every round reported; results go to
    /// `bench/runs/<date>/USERSPACE.md`, RESULTS.md is left as it is.
    #[arg(long)]
    pub userspace_only: bool,
    /// Rounds of `--userspace-only`.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// With `--userspace-only`: also record each run with `perf record -a
    /// -g` (software clock), kept beside its report as `<label>.perf.data`.
    #[arg(long)]
    pub profile: bool,
    /// With `--userspace-only`: only the systems whose name contains one of
    /// these (for example `--system spartan`); all three when none is given.
    #[arg(long = "system")]
    pub systems: Vec<String>,
}

pub fn bench(bin: &Path, opts: BenchOpts) -> Result<()> {
    if opts.userspace_only {
        return userspace_only(bin, &opts);
    }
    let repeat = if opts.quick { "100000" } else { "1000000" };
    println!("== XDP program, BPF_PROG_TEST_RUN, repeat {repeat}");
    let xdp = Command::new(crate::build_bench_xdp()?)
        .args(["--repeat", repeat])
        .output()
        .context("bench-xdp")?;
    let xdp_table = String::from_utf8_lossy(&xdp.stdout).to_string();
    print!("{xdp_table}");
    if !xdp.status.success() {
        bail!("bench-xdp failed: {}", String::from_utf8_lossy(&xdp.stderr));
    }
    if opts.cache_only {
        return cache_lab_only(bin, opts.quick, &xdp_table);
    }
    lab(bin, opts.quick, &xdp_table)
}

/// The run's name: its start in UTC, usable as a directory name.
fn run_stamp() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H%M%SZ").to_string()
}

/// Turns the kernel's bpf stats (run_cnt, run_time_ns) on for the value's
/// life.
struct BpfStats;

impl BpfStats {
    fn on() -> Self {
        Self::set(1);
        BpfStats
    }

    fn set(value: u8) {
        let _ = Command::new("sysctl")
            .args(["-q", "-w", &format!("kernel.bpf_stats_enabled={value}")])
            .status();
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        Self::set(0);
    }
}

fn cache_lab_only(bin: &Path, quick: bool, xdp_table: &str) -> Result<()> {
    let stamp = run_stamp();
    let out_dir = workspace_root().join("bench").join("runs").join(&stamp);
    std::fs::create_dir_all(&out_dir)?;
    let lab = crate::lab::Lab::new(&out_dir)?;
    let stats = BpfStats::on();
    let results = crate::cachelab::run(bin, &lab, quick);
    drop(stats);
    drop(lab);
    let results = results?;
    let md = format!(
        "# Answer cache lab ({stamp}, {} mode)\n\n## XDP program (BPF_PROG_TEST_RUN)\n\n```\n{xdp_table}```\n\n{}",
        if quick { "quick" } else { "full" },
        crate::cachelab::markdown(&results)
    );
    std::fs::write(out_dir.join("CACHE.md"), &md)?;
    println!("\n{md}\nwritten {}", out_dir.join("CACHE.md").display());
    Ok(())
}

/// Spartan's userspace path beside dnsdist and unbound, every round kept:
/// the figures of the userspace goals (CPU per query at a fixed rate, max
/// qps), with the user/system split of the CPU.
fn userspace_only(bin: &Path, opts: &BenchOpts) -> Result<()> {
    let (quick, rounds, profile) = (opts.quick, opts.rounds, opts.profile);
    let stamp = run_stamp();
    let out_dir = workspace_root().join("bench").join("runs").join(&stamp);
    std::fs::create_dir_all(&out_dir)?;
    let lab = Lab::new(&out_dir)?;
    let seconds = if quick { 2 } else { 5 };
    let systems: Vec<System> = [System::SpartanUser, System::Dnsdist, System::Unbound]
        .into_iter()
        .filter(|s| {
            opts.systems.is_empty() || opts.systems.iter().any(|o| s.name().contains(o.as_str()))
        })
        .collect();
    if systems.is_empty() {
        bail!("--system matches none of spartan, dnsdist, unbound");
    }
    let mut chosen: Vec<Scenario> = scenarios()
        .into_iter()
        .filter(|s| s.blackholed.is_none() && !s.name.starts_with("1."))
        .collect();
    // The same forwarded names with one upstream configured, for every
    // system: nothing to race, so it sets Spartan's cost per exchange
    // beside the peers' without the second upstream's packets.
    chosen.push(Scenario {
        name: "3b. forwarded, one upstream configured (no racing), 2000 qps",
        queries: FORWARDED,
        blackholed: None,
        load: Load::Rate(2000),
        upstreams: &UPSTREAMS[..1],
    });
    let mut rows = Vec::new();
    for round in 0..rounds {
        for scenario in &chosen {
            for &system in &systems {
                let label = format!("u{round}-{}-{}", &scenario.name[..2], system.slug());
                let r = with_system(bin, &lab.dir, system, scenario.upstreams, |pid| {
                    let perf = match profile {
                        true => Some(record_profile(&lab.dir.join(format!("{label}.perf.data")))?),
                        false => None,
                    };
                    let r = dnsperf(
                        LAB,
                        &lab.dir,
                        &label,
                        scenario.queries,
                        seconds,
                        scenario.load,
                        pid,
                    );
                    if let Some(mut perf) = perf {
                        terminate(&mut perf);
                    }
                    r
                })??;
                let row = vec![
                    round.to_string(),
                    scenario.name.to_string(),
                    system.name().to_string(),
                    format!("{:.0}", r.qps),
                    format!("{:.1}", r.server_cpu_us_per_query),
                    format!("{:.1}", r.server_user_us_per_query),
                    format!("{:.2}", r.server_switches_per_query),
                    format!("{:.3}", r.p99_ms),
                    r.lost.to_string(),
                ];
                println!("{}", row.join("  "));
                rows.push(row);
            }
        }
    }
    drop(lab);
    let md = format!(
        "# Userspace path ({stamp}, {seconds} s per run, {rounds} interleaved rounds)\n\n{}",
        crate::lab::report::table(
            &[
                "round",
                "scenario",
                "system",
                "qps",
                "server µs/query",
                "of which user µs",
                "switches/query",
                "p99 ms",
                "lost"
            ],
            rows
        )
    );
    std::fs::write(out_dir.join("USERSPACE.md"), &md)?;
    println!("\n{md}\nwritten {}", out_dir.join("USERSPACE.md").display());
    Ok(())
}

/// `perf record` of the whole machine (every process, the kernel's
/// softirqs too) into `out`, until terminated.
fn record_profile(out: &Path) -> Result<std::process::Child> {
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-a", "-g", "-o"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("perf record")
}

/// One scenario of the lab.
struct Scenario {
    name: &'static str,
    queries: &'static [&'static str],
    /// The upstream blackholed for the scenario's length.
    blackholed: Option<&'static str>,
    load: Load,
    /// The upstreams the systems forward to.
    upstreams: &'static [&'static str],
}

fn scenarios() -> Vec<Scenario> {
    let scenario = |name, queries, blackholed, load| Scenario {
        name,
        queries,
        blackholed,
        load,
        upstreams: &UPSTREAMS,
    };
    vec![
        scenario(
            "1. local name, max qps",
            &["ready.spartan A"],
            None,
            Load::Max,
        ),
        scenario(
            "1b. local name, 2000 qps",
            &["ready.spartan A"],
            None,
            Load::Rate(2000),
        ),
        scenario(
            "2. forwarded, all upstreams healthy, max qps",
            FORWARDED,
            None,
            Load::Max,
        ),
        scenario(
            "3. forwarded, all upstreams healthy, 2000 qps",
            FORWARDED,
            None,
            Load::Rate(2000),
        ),
        scenario(
            "4. forwarded, one of three upstreams blackholed, 2000 qps",
            FORWARDED,
            Some(UPSTREAMS[0]),
            Load::Rate(2000),
        ),
    ]
}

fn lab(bin: &Path, quick: bool, xdp_table: &str) -> Result<()> {
    let stamp = run_stamp();
    let out_dir = workspace_root().join("bench").join("runs").join(&stamp);
    std::fs::create_dir_all(&out_dir)?;
    println!(
        "\n== lab: client, node and upstream namespaces; results in {}",
        out_dir.display()
    );
    let lab = Lab::new(&out_dir)?;
    let stats = BpfStats::on();
    let seconds = if quick { 2 } else { 5 };
    let rounds = if quick { 1 } else { 2 };
    let mut results: BTreeMap<String, BTreeMap<String, crate::lab::RunResult>> = BTreeMap::new();
    // Interleaved rounds (A B C ... A B C): the machine's speed drifts.
    for round in 0..rounds {
        for Scenario {
            name: scenario,
            queries,
            blackholed,
            load,
            upstreams,
        } in scenarios()
        {
            Lab::blackhole(blackholed)?;
            for system in System::ALL {
                let label = format!("r{round}-{}-{}", &scenario[..1], system.slug());
                let r = with_system(bin, &lab.dir, system, upstreams, |pid| {
                    dnsperf(LAB, &lab.dir, &label, queries, seconds, load, pid)
                })??;
                println!(
                    "{scenario:<48} {:<24} {:>9.0} qps  p99 {:>8.3} ms  lost {:>6}  >1s {:>5}  {:>6.1} µs/q",
                    system.name(),
                    r.qps,
                    r.p99_ms,
                    r.lost,
                    r.slower_than_1s,
                    r.server_cpu_us_per_query
                );
                let slot = results.entry(scenario.to_string()).or_default();
                // Two rounds: keep the better-qps one (the drift only slows).
                let keep = slot.get(system.name()).is_none_or(|old| r.qps > old.qps);
                if keep {
                    slot.insert(system.name().to_string(), r);
                }
            }
        }
    }
    let cache = crate::cachelab::run(bin, &lab, quick)?;
    let cache_md = crate::cachelab::markdown(&cache);
    let syscalls = syscalls_per_forwarded_query(bin, &lab.dir, seconds)?;
    let restarts = crate::restart::run(bin, &lab.dir, if quick { 5 } else { 8 })?;
    let restart_table = crate::restart::markdown(&restarts);
    let topologies = crate::topology::run(bin, &lab.dir, seconds)?;
    let topology_table = crate::topology::markdown(&topologies);
    println!("\nkernel path by topology (ready.spartan):\n{topology_table}");
    println!(
        "spartan (userspace), forwarded at 1000 qps racing two upstreams: {:.2} system calls per query ({} calls, {} queries; strace -c -f)",
        syscalls.per_query(),
        syscalls.calls,
        syscalls.queries
    );
    Lab::blackhole(Some(UPSTREAMS[0]))?;
    let lookups = if quick { 2 } else { 4 };
    let glibc = glibc_baseline(&lab.dir, lookups)?;
    Lab::blackhole(None)?;
    drop(stats);
    println!("glibc stub, first of three upstreams blackholed: getent hosts took {glibc:.0?} ms");
    println!("\nratios against the best peer (qps; CPU per query, lower is better):");
    for (scenario, systems) in &results {
        let best_qps = systems
            .iter()
            .filter(|(n, _)| !n.starts_with("spartan"))
            .map(|(_, r)| r.qps)
            .fold(0.0f64, f64::max);
        let best_cpu = systems
            .iter()
            .filter(|(n, _)| !n.starts_with("spartan"))
            .map(|(_, r)| r.server_cpu_us_per_query)
            .fold(f64::INFINITY, f64::min);
        for (name, r) in systems.iter().filter(|(n, _)| n.starts_with("spartan")) {
            println!(
                "  {scenario:<58} {name:<24} qps x{:.2}  CPU/query x{:.2}",
                r.qps / best_qps.max(1e-9),
                r.server_cpu_us_per_query / best_cpu.max(1e-9)
            );
        }
    }
    drop(lab);

    let machine = format!(
        "{} cores, kernel {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        String::from_utf8_lossy(&Command::new("uname").arg("-r").output()?.stdout).trim()
    );
    let versions = String::from_utf8_lossy(
        &Command::new("dpkg-query")
            .args([
                "-W",
                "-f=${Package} ${Version}\n",
                "dnsperf",
                "dnsmasq-base",
                "dnsdist",
                "unbound",
                "nsd",
            ])
            .output()?
            .stdout,
    )
    .to_string();
    let header = ResultsHeader {
        stamp: &stamp,
        mode: if quick { "quick" } else { "full" },
        seconds,
        rounds,
        machine: &machine,
        versions: &versions,
        xdp_table,
        glibc_ms: &glibc,
        restart_table: &restart_table,
        topology_table: &topology_table,
        syscalls: &syscalls,
    }
    .to_string();
    let md = crate::lab::report::markdown(&results, &header) + "\n" + &cache_md;
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "stamp": stamp, "machine": machine, "versions": versions, "glibc_ms": glibc,
            "xdp": xdp_table, "results": crate::lab::report::to_json(&results),
        }))?,
    )?;
    std::fs::write(out_dir.join("RESULTS.md"), &md)?;
    std::fs::write(workspace_root().join("bench").join("RESULTS.md"), &md)?;
    crate::lab::chart::draw(&results, &workspace_root().join("bench").join("chart.png"))
        .unwrap_or_else(|e| println!("chart not drawn: {e:#}"));
    println!(
        "\nwritten bench/RESULTS.md, bench/chart.png and {}",
        out_dir.display()
    );
    Ok(())
}

/// The top of RESULTS.md: how the run was made, then the sections that are
/// not per-scenario tables.
struct ResultsHeader<'a> {
    stamp: &'a str,
    mode: &'a str,
    seconds: u32,
    rounds: u32,
    machine: &'a str,
    versions: &'a str,
    xdp_table: &'a str,
    glibc_ms: &'a [f64],
    restart_table: &'a str,
    topology_table: &'a str,
    syscalls: &'a Syscalls,
}

impl fmt::Display for ResultsHeader<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            stamp,
            mode,
            seconds,
            rounds,
            machine,
            ..
        } = self;
        writeln!(f, "# Benchmark results\n")?;
        writeln!(
            f,
            "Run {stamp} ({mode} mode, {seconds} s per run, {rounds} interleaved round(s), best kept), {machine}."
        )?;
        writeln!(
            f,
            "Same client (dnsperf in the client namespace: `-q 100` for max qps, `-q 20000 -Q 2000` at a fixed rate), \
             same three NSD upstreams (TTL 0), same queries for every system."
        )?;
        writeln!(
            f,
            "XDP ns/run: the programs attached in the node namespace (bpf stats), so Spartan's kernel path only."
        )?;
        writeln!(
            f,
            "On 2 cores dnsperf itself caps qps near 75-112k (see the README's Benchmarks section): \
             compare ratios and CPU per query.\n"
        )?;
        writeln!(f, "Versions:\n\n```\n{}```\n", self.versions)?;
        writeln!(
            f,
            "## XDP program (BPF_PROG_TEST_RUN)\n\n```\n{}```\n",
            self.xdp_table
        )?;
        writeln!(
            f,
            "## glibc stub alone, first of three upstreams blackholed\n\n`getent hosts www.example.net`: {:.0?} ms\n",
            self.glibc_ms
        )?;
        writeln!(
            f,
            "## Restart under load\n\nForwarded names at 2,000 qps (dnsperf, 2 s timeout) while the system is \
             restarted once, its own way: Spartan as its units run it (the listen sockets held by systemd's \
             `spartan.socket`, here by the bench, and passed to the next daemon), the peers by stopping and \
             starting their process.\n\n{}",
            self.restart_table
        )?;
        writeln!(
            f,
            "## Kernel path by topology\n\n`ready.spartan` through Spartan's XDP program from a host process \
             (generic XDP on `lo`), from a plain container on a routed veth (generic XDP on the node's end) and \
             from a plain container on a Linux bridge (generic XDP on the bridge); nothing attached on the \
             container side.\n\n{}",
            self.topology_table
        )?;
        let s = self.syscalls;
        writeln!(
            f,
            "## System calls per forwarded query\n\nSpartan's daemon (userspace path) under `strace -c -f`, \
             forwarded names at 1000 qps, racing two of three upstreams: **{:.2}** per query ({} calls for {} \
             queries).\n\n```\n{}```\n",
            s.per_query(),
            s.calls,
            s.queries,
            s.table
        )?;
        writeln!(f, "## Lab")
    }
}
