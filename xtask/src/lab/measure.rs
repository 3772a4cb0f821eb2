//! What a run cost: CPU seconds of a process, the XDP programs' bpf stats,
//! system calls per query, and the glibc stub's own lookup time.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    load::{LAB, Load, dnsperf},
    netns::{NODE, UPSTREAMS, ns},
    systems::{FORWARDED, System, spartan_down, terminate},
};

/// (utime, stime) of a process and its threads, in seconds: the time
/// spent in its own code, and in the kernel on its behalf (system calls,
/// and the network stack's work done in its context).
pub fn cpu_split(pid: u32) -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    let Some(close) = stat.rfind(')') else {
        return (0.0, 0.0);
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// Nanoseconds a process's live threads have run so far (the scheduler's
/// own count, `/proc/PID/task/*/schedstat`): the same time as utime plus
/// stime, the network stack's work in its context included, but exact
/// where those come in 10 ms ticks. `None` when unreadable.
pub fn run_time_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Context switches of a process's threads so far (voluntary and not): each
/// voluntary one is a thread going to sleep, to be woken by a packet.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// (runs, ns) summed over the XDP programs attached in namespace `netns`
/// (bpf stats must be on).
pub fn prog_stats_in(netns: &str) -> Option<(u64, u64)> {
    let out = ns(netns, "bpftool")
        .args(["-j", "net", "show"])
        .output()
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut ids: Vec<u64> = Vec::new();
    for entry in json.as_array()? {
        for xdp in entry
            .get("xdp")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(id) = xdp.get("id").and_then(|v| v.as_u64())
                && !ids.contains(&id)
            {
                ids.push(id);
            }
        }
    }
    if ids.is_empty() {
        return None;
    }
    let (mut cnt, mut ns_total) = (0, 0);
    for id in ids {
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show", "id", &id.to_string()])
            .output()
            .ok()?;
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        cnt += p.get("run_cnt").and_then(|v| v.as_u64()).unwrap_or(0);
        ns_total += p.get("run_time_ns").and_then(|v| v.as_u64()).unwrap_or(0);
    }
    Some((cnt, ns_total))
}

/// System calls of Spartan's daemon per forwarded query.
pub struct Syscalls {
    pub calls: u64,
    pub queries: u64,
    /// strace's summary, the busiest calls first.
    pub table: String,
}

impl Syscalls {
    pub fn per_query(&self) -> f64 {
        self.calls as f64 / self.queries.max(1) as f64
    }
}

/// Spartan on the userspace path, forwarded names at 1000 qps for
/// `seconds`, every system call of every thread counted by `strace -c -f`.
pub fn syscalls_per_forwarded_query(bin: &Path, dir: &Path, seconds: u32) -> Result<Syscalls> {
    let mut daemon = System::SpartanUser.start(bin, dir, &UPSTREAMS)?;
    let summary = dir.join("strace-forwarded.txt");
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-p", &daemon.id().to_string(), "-o"])
        .arg(&summary)
        .stderr(Stdio::null())
        .spawn()
        .context("starting strace")?;
    std::thread::sleep(Duration::from_millis(500));
    let run = dnsperf(
        LAB,
        dir,
        "syscalls",
        FORWARDED,
        seconds,
        Load::Rate(1000),
        daemon.id(),
    );
    terminate(&mut strace);
    terminate(&mut daemon);
    spartan_down(bin, super::systems::SPARTAN_PINS);
    let run = run?;
    let text = std::fs::read_to_string(&summary).context("strace summary")?;
    let calls = text
        .lines()
        .find(|l| l.trim_end().ends_with("total"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no total in strace's summary:\n{text}"))?;
    let table: String = text.lines().take(12).map(|l| format!("{l}\n")).collect();
    Ok(Syscalls {
        calls,
        queries: run.completed,
        table,
    })
}

/// The glibc stub alone: resolv.conf with the three upstreams, the first
/// blackholed, `getent hosts` timed `lookups` times (in the node namespace,
/// with a private /etc/resolv.conf).
pub fn glibc_baseline(dir: &Path, lookups: u32) -> Result<Vec<f64>> {
    let conf = dir.join("glibc-resolv.conf");
    let mut text = String::new();
    for u in UPSTREAMS {
        text.push_str(&format!("nameserver {u}\n"));
    }
    std::fs::write(&conf, &text)?;
    let mut times = Vec::new();
    for _ in 0..lookups {
        let script = format!(
            "mount --bind {} /etc/resolv.conf && exec nsenter --net=/run/netns/{NODE} getent hosts www.example.net",
            conf.display()
        );
        let started = Instant::now();
        let _ = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .status()?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(times)
}
