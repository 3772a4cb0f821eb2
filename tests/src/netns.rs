//! Network namespaces and veth pairs that the tests create and always
//! remove (on drop, also when a test panics).

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique short name (interface names are at most 15 bytes).
pub fn unique(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A network namespace with `lo` up, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS...`
    pub fn ip(&self, args: &[&str]) -> Output {
        sh(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command run inside the namespace (network namespace only, so that
    /// /sys/fs/bpf stays the host's bpffs).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Silently drops UDP and TCP to `ip:port` arriving in this namespace
    /// (a blackhole, not an ICMP error); `flush_blackholes` lifts them.
    pub fn blackhole(&self, ip: &str, port: u16) {
        for proto in ["udp", "tcp"] {
            sh(self.command("iptables").args([
                "-A",
                "INPUT",
                "-d",
                ip,
                "-p",
                proto,
                "--dport",
                &port.to_string(),
                "-j",
                "DROP",
            ]));
        }
    }

    /// Starts counting the UDP datagrams sent to `ip:port` from inside the
    /// namespace (an iptables rule without a target: it only counts).
    pub fn count_udp_to(&self, ip: &str, port: u16) {
        sh(self.command("iptables").args([
            "-A",
            "OUTPUT",
            "-d",
            ip,
            "-p",
            "udp",
            "--dport",
            &port.to_string(),
        ]));
    }

    /// UDP datagrams sent to `ip:port` since [`Self::count_udp_to`].
    pub fn udp_sent_to(&self, ip: &str, port: u16) -> u64 {
        let out = self
            .command("iptables")
            .args(["-L", "OUTPUT", "-v", "-x", "-n"])
            .output()
            .expect("iptables -L");
        let text = String::from_utf8_lossy(&out.stdout);
        let dpt = format!("dpt:{port}");
        text.lines()
            .find(|l| l.contains(ip) && l.contains(&dpt) && l.contains("udp"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no counting rule for {ip}:{port}:\n{text}"))
    }

    pub fn flush_blackholes(&self) {
        sh(self.command("iptables").args(["-F", "INPUT"]));
    }

    /// Runs `f` on a thread that entered this namespace; sockets it creates
    /// stay in the namespace when used from anywhere afterwards.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = File::open(&path).expect("open netns");
            // SAFETY: setns on this thread only.
            let ret = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(ret, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes started in the namespace are stopped by their own guards
        // first (they are declared after the namespace, so dropped before).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A veth pair between two namespaces, each end with an address.
pub struct Link {
    pub a_if: String,
    pub b_if: String,
}

/// Joins `a` and `b` with a veth pair; `a_addr`/`b_addr` in CIDR form.
/// The node-side (`b`) end is named `vb…`.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Link {
    veth_named(a, &unique("va"), a_addr, b, &unique("vb"), b_addr)
}

/// [`veth`] with the two ends' names given.
pub fn veth_named(
    a: &Netns,
    a_if: &str,
    a_addr: &str,
    b: &Netns,
    b_if: &str,
    b_addr: &str,
) -> Link {
    let (a_if, b_if) = (a_if.to_string(), b_if.to_string());
    sh(Command::new("ip").args([
        "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
        &b.name,
    ]));
    a.ip(&["addr", "add", a_addr, "dev", &a_if]);
    b.ip(&["addr", "add", b_addr, "dev", &b_if]);
    a.ip(&["link", "set", &a_if, "up"]);
    b.ip(&["link", "set", &b_if, "up"]);
    // Deleted with the namespaces.
    Link { a_if, b_if }
}

/// A veth pair from `a` (with `a_addr`, CIDR) into `b`, whose end is made a
/// port of `bridge` there (no address: the bridge has it).
pub fn veth_port(a: &Netns, a_addr: &str, b: &Netns, bridge: &str) -> Link {
    let a_if = unique("va");
    let b_if = unique("vp");
    sh(Command::new("ip").args([
        "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
        &b.name,
    ]));
    a.ip(&["addr", "add", a_addr, "dev", &a_if]);
    b.ip(&["link", "set", &b_if, "master", bridge]);
    a.ip(&["link", "set", &a_if, "up"]);
    b.ip(&["link", "set", &b_if, "up"]);
    Link { a_if, b_if }
}
