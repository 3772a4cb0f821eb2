//! Real upstream DNS servers: NSD (Debian package `nsd`) serving a zone
//! shaped like Mesos-DNS's and an ordinary one, started inside a test's
//! namespace and stopped on drop.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;

use crate::{client, netns::Netns};

/// Names every test server serves.
pub const ORDINARY_ZONE: &str = "example.net.";
pub const BIG_NAME: &str = "big.example.net.";

fn mesos_zone(label: &str) -> String {
    format!(
        "$ORIGIN mesos.\n$TTL 60\n\
@ IN SOA ns1.mesos. root.ns1.mesos. 1 60 60 600 0\n\
@ IN NS ns1.mesos.\n\
ns1 IN A 192.0.2.53\n\
leader IN A 10.0.0.1\n\
master IN A 10.0.0.1\n\
master IN A 10.0.0.2\n\
master IN A 10.0.0.3\n\
web.marathon IN A 10.0.1.10\n\
web.marathon IN A 10.0.1.11\n\
_web._tcp.marathon IN SRV 0 1 31000 web.marathon.mesos.\n\
who IN TXT \"{label}\"\n"
    )
}

fn ordinary_zone(label: &str) -> String {
    let mut z = format!(
        "$ORIGIN example.net.\n$TTL 60\n\
@ IN SOA ns1.example.net. root.example.net. 1 60 60 600 0\n\
@ IN NS ns1.example.net.\n\
ns1 IN A 192.0.2.53\n\
www IN A 192.0.2.80\n\
who IN TXT \"{label}\"\n"
    );
    // Enough records that the answer exceeds 512 bytes: truncated over UDP.
    for i in 1..=60 {
        z.push_str(&format!("big IN A 10.9.0.{i}\n"));
    }
    z
}

/// A zone for the answer cache's rules: a long TTL, a short one, a zero
/// one, and an SOA whose MINIMUM (3 s) makes the negative TTL.
pub const CACHE_ZONE: &str = "cache.example.";

fn cache_zone(label: &str) -> String {
    format!(
        "$ORIGIN cache.example.\n$TTL 3600\n\
@ IN SOA ns1.cache.example. root.cache.example. 1 60 60 600 3\n\
@ IN NS ns1.cache.example.\n\
ns1 IN A 192.0.2.53\n\
long IN A 192.0.2.1\n\
short 2 IN A 192.0.2.2\n\
zero 0 IN A 192.0.2.3\n\
who 3600 IN TXT \"{label}\"\n"
    )
}

/// One NSD process.
pub struct Nsd {
    child: Option<Child>,
    dir: PathBuf,
    pub addr: SocketAddr,
}

impl Nsd {
    /// Starts NSD on `addr` inside `ns`, serving `mesos.` and `example.net.`
    /// with `who` TXT records saying `label`; waits until it answers.
    pub fn start(ns: &Netns, addr: SocketAddr, label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("spartan-nsd-{}", crate::netns::unique("n")));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("mesos.zone"), mesos_zone(label)).unwrap();
        std::fs::write(dir.join("example.net.zone"), ordinary_zone(label)).unwrap();
        std::fs::write(dir.join("cache.example.zone"), cache_zone(label)).unwrap();
        let conf = format!(
            "server:\n  ip-address: {ip}@{port}\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  \
zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  \
zonelistfile: \"{d}/zone.list\"\n  verbosity: 0\n  hide-version: yes\n  \
rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n  server-count: 1\n  do-ip6: no\n\
remote-control:\n  control-enable: no\n\
zone:\n  name: mesos\n  zonefile: mesos.zone\n\
zone:\n  name: example.net\n  zonefile: example.net.zone\n\
zone:\n  name: cache.example\n  zonefile: cache.example.zone\n",
            ip = addr.ip(),
            port = addr.port(),
            d = dir.display()
        );
        let conf_path = dir.join("nsd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("nsd.log")).unwrap();
        let child = ns
            .command("nsd")
            .args(["-d", "-c"])
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nsd (Debian package nsd)");
        let mut nsd = Self {
            child: Some(child),
            dir,
            addr,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if client::query_in(
                Some(ns),
                addr,
                "www.example.net.",
                RecordType::A,
                Duration::from_millis(200),
            )
            .is_ok()
            {
                break;
            }
            if let Some(status) = nsd.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "nsd exited ({status}): {}",
                    std::fs::read_to_string(nsd.dir.join("nsd.log")).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nsd on {addr} not answering");
            std::thread::sleep(Duration::from_millis(50));
        }
        nsd
    }
}

impl Nsd {
    /// Stops every NSD process of this server (SIGSTOP): queries wait in
    /// its socket, as with an overloaded or stalled upstream.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets it run again (SIGCONT): the queued queries are answered.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("pkill")
            .args([sig, "-f"])
            .arg(self.dir.join("nsd.conf"))
            .status()
            .expect("pkill");
        assert!(status.success(), "pkill {sig} found no nsd process");
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill")
            .args(["-CONT", "-f"])
            .arg(self.dir.join("nsd.conf"))
            .status();
        if let Some(mut child) = self.child.take() {
            // SIGTERM lets nsd stop its server processes too.
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
