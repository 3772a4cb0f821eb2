//! The systems under test (Spartan and the peers an operator would pick
//! instead), their configurations, and the NSD upstreams they forward to.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::netns::{ADDR, CLIENT, NODE, NODE_TO_CLIENT, UP, ns, wait_answer, wait_for};

/// Where the lab's Spartan pins its maps and links.
pub const SPARTAN_PINS: &str = "/sys/fs/bpf/spartan-lab";

/// `spartan down` for the lab's Spartan: its pins go, the node's
/// addresses (the lab's own) stay.
pub fn spartan_down(bin: &Path, pins: &str) {
    let _ = Command::new(bin)
        .args(["down", "--pin-dir", pins, "--no-interface"])
        .output();
}

/// Starts `system` (its files under `dir`), runs `f` with its pid, and
/// stops it (and, for Spartan, removes what it left in the lab's node).
pub fn with_system<T>(
    bin: &Path,
    dir: &Path,
    system: System,
    upstreams: &[&str],
    f: impl FnOnce(u32) -> T,
) -> Result<T> {
    let mut child = system.start(bin, dir, upstreams)?;
    let out = f(child.id());
    terminate(&mut child);
    if system.is_spartan() {
        spartan_down(bin, SPARTAN_PINS);
    }
    Ok(out)
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

pub fn start_nsd(dir: &Path, addr: &str, n: usize) -> Result<Child> {
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
    pub fn start(self, bin: &Path, dir: &Path, upstreams: &[&str]) -> Result<Child> {
        let cmd = self.command(bin, dir, upstreams)?;
        self.spawn(cmd, dir)
    }

    /// Spawns `cmd` (from [`Self::command`]) with its log under `dir`, and
    /// waits until it answers.
    pub fn spawn(self, mut cmd: Command, dir: &Path) -> Result<Child> {
        let d = dir.join(self.slug());
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
    pub fn command(self, bin: &Path, dir: &Path, upstreams: &[&str]) -> Result<Command> {
        let d = dir.join(self.slug());
        std::fs::create_dir_all(&d)?;
        let ups: Vec<String> = upstreams.iter().map(|u| u.to_string()).collect();
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

/// SIGTERM, then (after 5 s) SIGKILL; reaped either way.
pub fn terminate(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
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
