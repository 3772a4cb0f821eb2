//! The benchmark lab: Spartan beside the tools an operator would pick
//! instead, on the same upstreams, queries and client, in namespaces of
//! the lab's own (never the host's network).
//!
//! ```text
//!  sb-client (dnsperf) --veth-- sb-node (system under test, 198.51.100.1) --veth-- sb-up (3 x nsd)
//!   192.0.2.1                   192.0.2.2 | 198.18.0.254                          198.18.0.1-3
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::util::run;

pub const CLIENT: &str = "sb-client";
pub const NODE: &str = "sb-node";
pub const UP: &str = "sb-up";
const ADDR: &str = "198.51.100.1";
pub const UPSTREAMS: [&str; 3] = ["198.18.0.1", "198.18.0.2", "198.18.0.3"];
const NODE_TO_CLIENT: &str = "sbn-c";
const CLIENT_TO_NODE: &str = "sbc-n";

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

/// Where the lab's Spartan pins its maps and links.
pub const SPARTAN_PINS: &str = "/sys/fs/bpf/spartan-lab";

/// `spartan down` for the lab's Spartan: its pins go, the node's
/// addresses (the lab's own) stay.
pub fn spartan_down(bin: &Path) {
    let _ = Command::new(bin)
        .args(["down", "--pin-dir", SPARTAN_PINS, "--no-interface"])
        .output();
}

/// The namespaces and links; all removed on drop.
pub struct Lab {
    pub dir: PathBuf,
    upstreams: Vec<Child>,
}

impl Lab {
    pub fn new(dir: &Path) -> Result<Self> {
        Self::teardown();
        for n in [CLIENT, NODE, UP] {
            ip(&["netns", "add", n])?;
            ip(&["-n", n, "link", "set", "lo", "up"])?;
        }
        let mut lab = Lab {
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
        ip(&[
            "-n",
            CLIENT,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "192.0.2.2",
        ])?;
        // The client is a container as it really is: a plain veth, nothing
        // attached on its side (Spartan puts generic XDP on the node's end).
        std::fs::create_dir_all(dir)?;
        for (i, a) in UPSTREAMS.iter().enumerate() {
            lab.upstreams.push(start_nsd(dir, a, i + 1)?);
        }
        Ok(lab)
    }

    /// Drops everything to `addr` in the upstreams' namespace (a silent
    /// blackhole), or lifts every such rule.
    /// Blackholes every upstream at once (every master down).
    pub fn blackhole_all() -> Result<()> {
        Self::blackhole(None)?;
        for a in UPSTREAMS {
            for proto in ["udp", "tcp"] {
                run(ns(UP, "iptables").args([
                    "-A", "INPUT", "-d", a, "-p", proto, "--dport", "53", "-j", "DROP",
                ]))?;
            }
        }
        Ok(())
    }

    pub fn blackhole(addr: Option<&str>) -> Result<()> {
        let _ = ns(UP, "iptables").args(["-F", "INPUT"]).status();
        if let Some(a) = addr {
            for proto in ["udp", "tcp"] {
                run(ns(UP, "iptables").args([
                    "-A", "INPUT", "-d", a, "-p", proto, "--dport", "53", "-j", "DROP",
                ]))?;
            }
        }
        Ok(())
    }

    fn teardown() {
        for n in [CLIENT, NODE, UP] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.upstreams {
            terminate(child);
        }
        Self::teardown();
    }
}

pub fn terminate(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc_kill(child.id() as i32, 15) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// The names the benchmark asks: forwarded names with TTL 0 so that no
/// cache can answer them, in a Mesos-DNS-shaped zone and an ordinary one.
pub const FORWARDED: &[&str] = &[
    "leader.mesos A",
    "master.mesos A",
    "web.marathon.mesos A",
    "_web._tcp.marathon.mesos SRV",
    "www.example.net A",
    "api.example.net A",
];

fn start_nsd(dir: &Path, addr: &str, n: usize) -> Result<Child> {
    let d = dir.join(format!("nsd-{n}"));
    std::fs::create_dir_all(&d)?;
    std::fs::write(
        d.join("mesos.zone"),
        "$ORIGIN mesos.\n$TTL 0\n@ IN SOA ns1.mesos. root.mesos. 1 60 60 600 0\n@ IN NS ns1.mesos.\nns1 IN A 198.18.0.1\n\
leader IN A 10.0.0.1\nmaster IN A 10.0.0.1\nmaster IN A 10.0.0.2\nmaster IN A 10.0.0.3\n\
web.marathon IN A 10.0.1.10\nweb.marathon IN A 10.0.1.11\n_web._tcp.marathon IN SRV 0 1 31000 web.marathon.mesos.\n",
    )?;
    std::fs::write(
        d.join("example.net.zone"),
        "$ORIGIN example.net.\n$TTL 0\n@ IN SOA ns1.example.net. root.example.net. 1 60 60 600 0\n@ IN NS ns1.example.net.\n\
ns1 IN A 198.18.0.1\nwww IN A 192.0.2.80\napi IN A 192.0.2.81\n",
    )?;
    let mut extra = String::new();
    for (zone, text) in crate::cachelab::zones() {
        std::fs::write(d.join(format!("{zone}.zone")), text)?;
        extra.push_str(&format!("zone:\n  name: {zone}\n  zonefile: {zone}.zone\n"));
    }
    let conf = format!(
        "server:\n  ip-address: {addr}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  \
database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  verbosity: 0\n  \
rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n  server-count: 1\n  do-ip6: no\n\
remote-control:\n  control-enable: no\nzone:\n  name: mesos\n  zonefile: mesos.zone\nzone:\n  name: example.net\n  zonefile: example.net.zone\n{extra}",
        d = d.display()
    );
    std::fs::write(d.join("nsd.conf"), conf)?;
    let child = ns(UP, "nsd")
        .args(["-d", "-c"])
        .arg(d.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nsd")?;
    wait_answer(UP, addr, "www.example.net")?;
    Ok(child)
}

/// Waits (bounded) until `server` answers `name` with `want`.
pub fn wait_for(netns: &str, server: &str, name: &str, want: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ns(netns, "dig")
            .args([&format!("@{server}"), "+short", "+time=1", "+tries=1", name])
            .output()?;
        if String::from_utf8_lossy(&out.stdout).trim() == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{server} does not answer {name} with {want}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until `server` answers `name` from inside `netns`.
pub fn wait_answer(netns: &str, server: &str, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = ns(netns, "dig")
            .args([&format!("@{server}"), "+short", "+time=1", "+tries=1", name])
            .output()?;
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{server} does not answer {name}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    SpartanKernel,
    SpartanUser,
    /// Spartan with `--no-cache` (the cache lab only).
    SpartanNoCache,
    Dnsmasq,
    /// dnsmasq with its cache on (the cache lab only).
    DnsmasqCache,
    Dnsdist,
    DnsdistCache,
    Unbound,
}

impl System {
    pub const ALL: [System; 6] = [
        System::SpartanKernel,
        System::SpartanUser,
        System::Dnsmasq,
        System::Dnsdist,
        System::DnsdistCache,
        System::Unbound,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::SpartanKernel => "spartan (kernel path)",
            System::SpartanUser => "spartan (userspace)",
            System::SpartanNoCache => "spartan --no-cache",
            System::DnsmasqCache => "dnsmasq + cache",
            System::Dnsmasq => "dnsmasq --all-servers",
            System::Dnsdist => "dnsdist",
            System::DnsdistCache => "dnsdist + packet cache",
            System::Unbound => "unbound (forwarder)",
        }
    }

    pub fn is_spartan(self) -> bool {
        matches!(
            self,
            System::SpartanKernel | System::SpartanUser | System::SpartanNoCache
        )
    }

    /// The name as a file name.
    pub fn slug(self) -> String {
        self.name().replace([' ', '(', ')', '+'], "-")
    }

    /// Writes the system's configuration under `dir` and starts it in the
    /// node namespace; waits until it answers.
    pub fn start(self, bin: &Path, dir: &Path) -> Result<Child> {
        let cmd = self.command(bin, dir)?;
        self.spawn(cmd, dir)
    }

    /// Spawns `cmd` (from [`Self::command`]) with its log under `dir`, and
    /// waits until it answers.
    pub fn spawn(self, mut cmd: Command, dir: &Path) -> Result<Child> {
        let d = dir.join(self.name().replace([' ', '(', ')', '+'], "-"));
        let log = std::fs::File::create(d.join("log.txt"))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.name()))?;
        wait_for(CLIENT, ADDR, "ready.spartan", "127.0.0.1")
            .with_context(|| format!("{} did not come up", self.name()))?;
        Ok(child)
    }

    /// Writes the system's configuration under `dir`: the command that runs
    /// it in the node namespace.
    pub fn command(self, bin: &Path, dir: &Path) -> Result<Command> {
        let d = dir.join(self.name().replace([' ', '(', ')', '+'], "-"));
        std::fs::create_dir_all(&d)?;
        let ups: Vec<String> = UPSTREAMS.iter().map(|u| u.to_string()).collect();
        let cmd = match self {
            System::SpartanKernel | System::SpartanUser | System::SpartanNoCache => {
                let mut c = ns(NODE, bin.to_str().unwrap());
                c.args([
                    "run",
                    "--listen",
                    ADDR,
                    "--no-interface",
                    "--detach-on-exit",
                ])
                .args(["--upstream", &ups.join(",")])
                // `*.mesos` goes to the masters' Mesos-DNS: here the same
                // NSD upstreams (they serve the mesos zone), so that every
                // system forwards every query of the forwarded scenarios.
                .args(["--masters", &ups.join(","), "--mesos-port", "53"])
                .args(["--pin-dir", SPARTAN_PINS])
                .args(["--xdp-interface", NODE_TO_CLIENT])
                .env("SPARTAN_LOG", "warn");
                if self == System::SpartanUser {
                    c.arg("--no-xdp");
                }
                if self == System::SpartanNoCache {
                    c.arg("--no-cache");
                }
                std::fs::write(d.join("command.txt"), format!("{c:?}\n"))?;
                c
            }
            System::Dnsmasq | System::DnsmasqCache => {
                let cache = if self == System::DnsmasqCache {
                    10000
                } else {
                    0
                };
                let mut conf = format!(
                    "no-resolv\nno-hosts\nbind-interfaces\nlisten-address=198.51.100.1\nexcept-interface=sbn-u\n\
all-servers\ncache-size={cache}\nhost-record=ready.spartan,127.0.0.1\ndns-forward-max=1000\nuser=root\n",
                );
                for u in &ups {
                    conf.push_str(&format!("server={u}\n"));
                }
                std::fs::write(d.join("dnsmasq.conf"), &conf)?;
                let mut c = ns(NODE, "dnsmasq");
                c.args(["-k", "-C"]).arg(d.join("dnsmasq.conf"));
                c
            }
            System::Dnsdist | System::DnsdistCache => {
                let mut conf = String::from(
                    "setLocal('198.51.100.1:53')\nsetACL({'0.0.0.0/0'})\nsetSecurityPollSuffix('')\n",
                );
                for u in &ups {
                    conf.push_str(&format!(
                        "newServer({{address='{u}:53', healthCheckMode='lazy'}})\n"
                    ));
                }
                conf.push_str("setServerPolicy(leastOutstanding)\naddAction('ready.spartan', SpoofAction('127.0.0.1'))\n");
                if self == System::DnsdistCache {
                    conf.push_str(
                        "pc = newPacketCache(100000, {minTTL=0})\ngetPool(''):setCache(pc)\n",
                    );
                }
                std::fs::write(d.join("dnsdist.conf"), &conf)?;
                let mut c = ns(NODE, "dnsdist");
                c.args(["--supervised", "--disable-syslog", "-C"])
                    .arg(d.join("dnsdist.conf"));
                c
            }
            System::Unbound => {
                let mut conf = format!(
                    "server:\n  interface: 198.51.100.1\n  port: 53\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  \
pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  access-control: 0.0.0.0/0 allow\n  do-not-query-localhost: no\n  \
num-threads: 2\n  local-zone: \"spartan.\" static\n  local-data: \"ready.spartan. 5 IN A 127.0.0.1\"\n\
forward-zone:\n  name: \".\"\n",
                    d = d.display()
                );
                for u in &ups {
                    conf.push_str(&format!("  forward-addr: {u}\n"));
                }
                std::fs::write(d.join("unbound.conf"), &conf)?;
                let mut c = ns(NODE, "unbound");
                c.args(["-d", "-c"]).arg(d.join("unbound.conf"));
                c
            }
        };
        Ok(cmd)
    }
}

/// (run_cnt, run_time_ns) summed over the XDP programs attached in the
/// node namespace (none for the peers; the client's pass-through program
/// is left out).
fn node_prog_stats() -> Option<(u64, u64)> {
    prog_stats_in(NODE)
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
    pub xdp_ns_per_run: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// utime + stime of a process and its threads, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    ticks / 100.0
}

/// Runs dnsperf from the client namespace for `seconds` on `queries`.
/// How dnsperf drives the server.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// As fast as it can with 100 queries outstanding (max qps).
    Max,
    /// A fixed rate, with up to 20,000 outstanding so that a stalled
    /// upstream shows up as latency and loss instead of stopping the sender
    /// (BENCHMARKING.md, trap 5).
    Rate(u32),
}

pub fn dnsperf(
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
    let cpu0 = cpu_seconds(server_pid);
    let bpf0 = node_prog_stats();
    let load_args: Vec<String> = match load {
        Load::Max => vec!["-q".into(), "100".into()],
        Load::Rate(qps) => vec!["-q".into(), "20000".into(), "-Q".into(), qps.to_string()],
    };
    let status = ns(CLIENT, "dnsperf")
        .args(["-s", ADDR, "-l", &seconds.to_string(), "-t", "2", "-v"])
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
    let cpu1 = cpu_seconds(server_pid);
    let bpf1 = node_prog_stats();
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
        server_cpu_us_per_query: (cpu1 - cpu0) * 1e6 / completed.max(1) as f64,
        xdp_ns_per_run,
    })
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
    let mut daemon = System::SpartanUser.start(bin, dir)?;
    let summary = dir.join("strace-forwarded.txt");
    let mut strace = Command::new("strace")
        .args(["-c", "-f", "-p", &daemon.id().to_string(), "-o"])
        .arg(&summary)
        .stderr(Stdio::null())
        .spawn()
        .context("starting strace")?;
    std::thread::sleep(Duration::from_millis(500));
    let run = dnsperf(
        dir,
        "syscalls",
        FORWARDED,
        seconds,
        Load::Rate(1000),
        daemon.id(),
    );
    terminate(&mut strace);
    terminate(&mut daemon);
    spartan_down(bin);
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

/// Markdown table of every result, with ratios against the best peer.
pub fn markdown(results: &BTreeMap<String, BTreeMap<String, RunResult>>, header: &str) -> String {
    let mut md = String::from(header);
    for (scenario, systems) in results {
        md.push_str(&format!("\n### {scenario}\n\n| system | qps | ratio to best peer | p50 ms | p99 ms | p99.9 ms | lost | > 1 s | server µs/query | XDP ns/run |\n|---|---|---|---|---|---|---|---|---|---|\n"));
        let best_peer = systems
            .iter()
            .filter(|(name, _)| !name.starts_with("spartan"))
            .map(|(_, r)| r.qps)
            .fold(0.0f64, f64::max);
        for (name, r) in systems {
            md.push_str(&format!(
                "| {name} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {} | {} | {:.1} | {} |\n",
                r.qps,
                if best_peer > 0.0 {
                    r.qps / best_peer
                } else {
                    0.0
                },
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.lost,
                r.slower_than_1s,
                r.server_cpu_us_per_query,
                r.xdp_ns_per_run
                    .map_or("-".to_string(), |v| format!("{v:.0}")),
            ));
        }
    }
    md
}

pub fn to_json(results: &BTreeMap<String, BTreeMap<String, RunResult>>) -> serde_json::Value {
    json!(results)
}
