//! The real `spartan` binary, started by a test and always stopped.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{client, netns::Netns};

/// The binary under test: `SPARTAN_BIN` (set by `cargo xtask test`), or the
/// workspace's release or debug build.
pub fn spartan_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SPARTAN_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target");
    for profile in ["release", "debug"] {
        let p = root.join(profile).join("spartan");
        if p.exists() {
            return p;
        }
    }
    panic!("no spartan binary: run `cargo xtask test` or build it first");
}

/// A running daemon; SIGTERM then SIGKILL on drop.
pub struct Spartan {
    child: Option<Child>,
    pub log: PathBuf,
    /// The pin directory given to a daemon whose test named none: a test
    /// never uses (nor locks) the node's own Spartan's.
    _own_pins: Option<crate::pins::PinDir>,
}

/// Does `args` say where to pin, by flag or in the configuration file?
fn names_a_pin_dir(args: &[String]) -> bool {
    if args.iter().any(|a| a == "--pin-dir") {
        return true;
    }
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .and_then(|path| std::fs::read_to_string(path).ok())
        .is_some_and(|text| text.contains("pin_dir"))
}

impl Spartan {
    /// Starts `spartan run ARGS` inside `ns` (or on the host) and waits until
    /// `probe` answers `ready.spartan`.
    pub fn start(ns: Option<&Netns>, args: &[String], probe: SocketAddr) -> Self {
        let mut s = Self::spawn(ns, args);
        s.wait_ready(ns, probe);
        s
    }

    /// Starts without waiting.
    pub fn spawn(ns: Option<&Netns>, args: &[String]) -> Self {
        Self::spawn_with_env(ns, args, &[])
    }

    /// Starts without waiting, with extra environment variables.
    pub fn spawn_with_env(ns: Option<&Netns>, args: &[String], env: &[(&str, &str)]) -> Self {
        Self::spawn_limited(ns, args, env, None)
    }

    /// Starts under a descriptor limit (soft and hard, as `ulimit -n`
    /// sets them), and waits until it answers.
    pub fn start_with_fd_limit(
        ns: &Netns,
        args: &[String],
        probe: SocketAddr,
        nofile: u32,
    ) -> Self {
        let mut s = Self::spawn_limited(Some(ns), args, &[], Some(nofile));
        s.wait_ready(Some(ns), probe);
        s
    }

    /// Starts with `sockets` passed as systemd's socket activation passes
    /// them (descriptors 3, 4, ...; `LISTEN_FDS`; `LISTEN_PID` = the
    /// daemon's own PID), and waits until it answers. The caller keeps its
    /// copies open, as systemd does across restarts.
    pub fn start_activated(
        ns: &Netns,
        args: &[String],
        probe: SocketAddr,
        sockets: &[std::os::fd::RawFd],
    ) -> Self {
        let mut s = Self::spawn_activated(ns, args, sockets);
        s.wait_ready(Some(ns), probe);
        s
    }

    /// [`Self::start_activated`] without waiting.
    pub fn spawn_activated(ns: &Netns, args: &[String], sockets: &[std::os::fd::RawFd]) -> Self {
        use std::os::unix::process::CommandExt;
        Self::spawn_with(Some(ns), args, &[], None, |cmd, bin| {
            // The shell's PID is the daemon's once it execs.
            let mut c = ns.command("sh");
            c.args([
                "-c",
                &format!(
                    "LISTEN_PID=$$ LISTEN_FDS={} exec \"$0\" \"$@\"",
                    sockets.len()
                ),
                bin,
            ]);
            let fds = sockets.to_vec();
            // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork
            // and exec.
            unsafe {
                c.pre_exec(move || {
                    let mut high = Vec::with_capacity(fds.len());
                    for fd in &fds {
                        let h = libc::fcntl(*fd, libc::F_DUPFD, 100);
                        if h < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        high.push(h);
                    }
                    for (i, h) in high.iter().enumerate() {
                        if libc::dup2(*h, 3 + i as i32) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
            *cmd = c;
        })
    }

    /// SIGKILL, as the watchdog does; waits for the exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn spawn_limited(
        ns: Option<&Netns>,
        args: &[String],
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Self {
        Self::spawn_with(ns, args, env, nofile, |_, _| {})
    }

    fn spawn_with(
        ns: Option<&Netns>,
        args: &[String],
        env: &[(&str, &str)],
        nofile: Option<u32>,
        wrap: impl FnOnce(&mut Command, &str),
    ) -> Self {
        let own_pins = (!names_a_pin_dir(args)).then(crate::pins::PinDir::new);
        let mut args = args.to_vec();
        if let Some(pins) = &own_pins {
            args.extend(["--pin-dir".to_string(), pins.path().display().to_string()]);
        }
        let bin = spartan_bin();
        let bin = bin.to_str().unwrap();
        let mut cmd = match (ns, nofile) {
            (Some(ns), Some(n)) => {
                let mut c = ns.command("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            (None, Some(n)) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(bin);
                c
            }
            (Some(ns), None) => ns.command(bin),
            (None, None) => Command::new(bin),
        };
        wrap(&mut cmd, bin);
        let log = std::env::temp_dir().join(format!(
            "spartan-test-{}-{}.log",
            std::process::id(),
            crate::netns::unique("d")
        ));
        let file = std::fs::File::create(&log).unwrap();
        cmd.arg("run")
            .args(args)
            .env("SPARTAN_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd.spawn().expect("start spartan");
        Self {
            child: Some(child),
            log,
            _own_pins: own_pins,
        }
    }

    pub fn wait_ready(&mut self, ns: Option<&Netns>, probe: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("spartan exited early ({status}):\n{}", self.log_text());
            }
            // Over TCP, which only the daemon answers (the kernel fast path
            // may still answer UDP for a daemon that just went away), and
            // only once this daemon said it is serving.
            let answered = self.log_text().contains("serving")
                && client::query_tcp_in(ns, probe, "ready.spartan.", Duration::from_millis(300))
                    .is_ok();
            if answered {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "spartan not ready within 20 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (at most `within`) for the daemon to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.as_mut()?.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Spartan {
    fn drop(&mut self) {
        self.stop();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("spartan log kept at {}", self.log.display());
        }
    }
}
