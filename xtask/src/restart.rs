//! Restarts under load: each system answers forwarded names at 2,000 qps
//! while it is restarted once, its own way; queries lost and the longest
//! answer time are what an operator's clients feel. Spartan is restarted
//! as its units run it: systemd holds the listen sockets
//! (`spartan.socket`), here this process holds them and passes them to
//! each daemon exactly as systemd does. The peers restart by stopping and
//! starting their process.

use std::{
    fs::File,
    net::{TcpListener, UdpSocket},
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::lab::{FORWARDED, Load, NODE, RunResult, System, dnsperf, load::LAB, terminate};

/// One system's figures.
pub struct Row {
    pub system: &'static str,
    pub result: RunResult,
}

/// Binds the listen sockets inside the node namespace (as systemd would).
fn hold_sockets() -> Result<(UdpSocket, TcpListener)> {
    std::thread::spawn(|| -> Result<(UdpSocket, TcpListener)> {
        let netns = File::open(format!("/run/netns/{NODE}"))?;
        // SAFETY: setns on this short-lived thread only.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok((
            UdpSocket::bind("198.51.100.1:53")?,
            TcpListener::bind("198.51.100.1:53")?,
        ))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("binding thread panicked"))?
}

/// `cmd` run with `fds` passed as systemd passes them (descriptors 3, 4,
/// ...; LISTEN_FDS; LISTEN_PID the daemon's own PID).
fn activated(cmd: &Command, fds: &[i32]) -> Command {
    let args: Vec<_> = cmd.get_args().map(|a| a.to_os_string()).collect();
    // nsenter --net=NS -- BIN ARGS...: the shell goes between `--` and BIN.
    let split = args.iter().position(|a| a == "--").map_or(0, |i| i + 1);
    let mut c = Command::new(cmd.get_program());
    c.args(&args[..split])
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS={} exec \"$0\" \"$@\"",
            fds.len()
        ))
        .args(&args[split..]);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    let fds = fds.to_vec();
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
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
    c
}

/// Each system, restarted once in the middle of `seconds` of load.
pub fn run(bin: &Path, dir: &Path, seconds: u32) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for system in [
        System::SpartanUser,
        System::Dnsmasq,
        System::Dnsdist,
        System::Unbound,
    ] {
        let held = if system.is_spartan() {
            Some(hold_sockets().context("holding Spartan's sockets")?)
        } else {
            None
        };
        let fds: Vec<i32> = held
            .iter()
            .flat_map(|(u, t)| [u.as_raw_fd(), t.as_raw_fd()])
            .collect();
        let start = || -> Result<Child> {
            let cmd = system.command(bin, dir, &crate::lab::UPSTREAMS)?;
            if fds.is_empty() {
                system.spawn(cmd, dir)
            } else {
                system.spawn(activated(&cmd, &fds), dir)
            }
        };
        let mut child = start()?;
        let label = format!("restart-{}", system.slug());
        let dir_owned = dir.to_path_buf();
        let load = std::thread::spawn(move || {
            dnsperf(
                LAB,
                &dir_owned,
                &label,
                FORWARDED,
                seconds,
                Load::Rate(2000),
                0,
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        terminate(&mut child);
        child = start()?;
        let result = load
            .join()
            .map_err(|_| anyhow::anyhow!("dnsperf thread panicked"))??;
        terminate(&mut child);
        if system.is_spartan() {
            crate::lab::spartan_down(bin, crate::lab::SPARTAN_PINS);
        }
        drop(held);
        println!(
            "restart under load: {:<24} lost {:>5}  longest {:>8.1} ms",
            system.name(),
            result.lost,
            result.max_ms
        );
        rows.push(Row {
            system: system.name(),
            result,
        });
    }
    Ok(rows)
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[Row]) -> String {
    crate::lab::report::table(
        &[
            "system",
            "queries sent",
            "lost",
            "longest answer ms",
            "p99 ms",
        ],
        rows.iter().map(|r| {
            vec![
                r.system.to_string(),
                r.result.sent.to_string(),
                r.result.lost.to_string(),
                format!("{:.1}", r.result.max_ms),
                format!("{:.3}", r.result.p99_ms),
            ]
        }),
    )
}
