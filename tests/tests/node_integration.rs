//! Watchdog, genresolv, the systemd notify protocol and the unit files.

use std::{
    os::unix::{fs::MetadataExt, net::UnixDatagram},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};
use tests::setup::{server, spartan_node};

use tests::{
    daemon::{Spartan, spartan_bin},
    netns::Netns,
};

fn args(extra: &[&str]) -> Vec<String> {
    [
        "--listen",
        "198.51.100.1",
        "--upstream",
        "127.0.0.1:5353",
        "--no-xdp",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(tests::netns::unique("gr"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `spartan genresolv` inside `node`, writing `output`.
fn genresolv(node: &Netns, output: &std::path::Path) -> std::process::Output {
    node.command(spartan_bin().to_str().unwrap())
        .args([
            "genresolv",
            "--addresses",
            "198.51.100.1,198.51.100.2,198.51.100.3",
            "--timeout-ms",
            "500",
        ])
        .arg("--output")
        .arg(output)
        .env("RESOLVERS", "192.0.2.7,192.0.2.8:5353")
        .env("SEARCH", "example.com")
        .output()
        .unwrap()
}

#[test]
fn root_genresolv_follows_spartan() {
    let node = spartan_node("spg");
    let dir = temp_dir();
    let target = dir.join("resolv.conf");
    std::fs::write(&target, "nameserver 192.0.2.1\n").unwrap();

    let mut s = Spartan::start(Some(&node), &args(&[]), server());
    assert!(genresolv(&node, &target).status.success());
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(
        text.contains("options timeout:1\noptions attempts:3\nsearch example.com\n"),
        "{text}"
    );
    assert!(
        text.ends_with("nameserver 198.51.100.1\n"),
        "only the answering address: {text}"
    );

    // Unchanged: not rewritten (same inode, same mtime).
    let before = std::fs::metadata(&target).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(genresolv(&node, &target).status.success());
    let after = std::fs::metadata(&target).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );

    // Spartan gone: the upstreams; one on another port cannot be written
    // (resolv.conf has no ports), and genresolv says it skipped it.
    assert!(s.stop().unwrap().success());
    let out = genresolv(&node, &target);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipped resolver 192.0.2.8:5353"), "{err}");
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(!text.contains("198.51.100"), "{text}");
    assert!(text.contains("nameserver 192.0.2.7\n"), "{text}");
    assert!(!text.contains("192.0.2.8"), "{text}");

    // Spartan back: its address again.
    let _s = Spartan::start(Some(&node), &args(&[]), server());
    assert!(genresolv(&node, &target).status.success());
    assert!(
        std::fs::read_to_string(&target)
            .unwrap()
            .ends_with("nameserver 198.51.100.1\n")
    );

    // A read-only directory (in a private mount namespace): a clear error,
    // the old file intact.
    let old = std::fs::read_to_string(&target).unwrap();
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec nsenter --net=/run/netns/{ns} {bin} genresolv --addresses 198.51.100.9 --timeout-ms 300 --output {t}",
        d = dir.display(),
        ns = node.name,
        bin = spartan_bin().display(),
        t = target.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("RESOLVERS", "192.0.2.9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("error:") && err.contains(".resolv.conf.spartan"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), old);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    // Nothing answers and no resolvers: the file is left alone.
    let out = node
        .command(spartan_bin().to_str().unwrap())
        .args([
            "genresolv",
            "--addresses",
            "198.51.100.9",
            "--timeout-ms",
            "300",
            "--output",
        ])
        .arg(&target)
        .env_remove("RESOLVERS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), old);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn root_the_watchdog_restarts_a_hung_daemon() {
    let node = spartan_node("spg");
    let s = Spartan::start(Some(&node), &args(&[]), server());
    let watchdog = |extra: &[&str]| {
        node.command(spartan_bin().to_str().unwrap())
            .args([
                "watchdog",
                "--addresses",
                "198.51.100.1",
                "--timeout-ms",
                "500",
                "--wait-ms",
                "300",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let healthy = watchdog(&["--dry-run"]);
    assert!(
        healthy.status.success(),
        "{}",
        String::from_utf8_lossy(&healthy.stdout)
    );

    // SAFETY: our own child.
    unsafe { libc::kill(s.pid() as i32, libc::SIGSTOP) };
    let started = Instant::now();
    let out = watchdog(&["--dry-run", "--service", "spartan-test.service"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "waited before the second check"
    );
    assert!(
        stdout.contains("would run `systemctl kill --signal=SIGKILL spartan-test.service`"),
        "{stdout}"
    );
    // A flag after --action is a flag, not an argument of the action:
    // with --dry-run nothing runs.
    let mark = temp_dir().join("killed");
    let action = format!("touch {}", mark.display());
    let out = watchdog(&["--action", &action, "--dry-run"]);
    assert!(!out.status.success());
    assert!(!mark.exists(), "--dry-run ran nothing");
    let out = watchdog(&["--action", "true", "--dry-run"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("would run `true`"));
    // Without --dry-run the action runs (here a harmless stand-in that leaves a mark).
    let out = watchdog(&["--action", &action]);
    assert!(!out.status.success());
    assert!(mark.exists(), "the action ran");
    unsafe { libc::kill(s.pid() as i32, libc::SIGCONT) };
    let _ = std::fs::remove_dir_all(mark.parent().unwrap());
}

#[test]
fn root_ready_then_watchdog_pings_only_while_the_self_check_passes() {
    let node = spartan_node("spg");
    let dir = temp_dir();
    let sock_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&sock_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = dir.join("spartan.toml");
    std::fs::write(&config, "self_check_interval_ms = 200\n").unwrap();
    let extra = ["--config", config.to_str().unwrap()];
    let _s = Spartan::spawn_with_env(
        Some(&node),
        &args(&extra),
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let recv = |within: Duration| -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            if let Ok(n) = socket.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).to_string());
            }
        }
        got
    };
    let first = recv(Duration::from_secs(3));
    assert_eq!(
        first.first().map(String::as_str),
        Some("READY=1"),
        "{first:?}"
    );
    assert!(
        first.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
        "{first:?}"
    );
    assert_eq!(first.iter().filter(|m| *m == "READY=1").count(), 1);

    // Block the listen sockets: the self-check fails, the pings stop.
    node.blackhole("198.51.100.1", 53);
    let _ = recv(Duration::from_millis(2500));
    let blocked = recv(Duration::from_secs(2));
    assert!(
        blocked.is_empty(),
        "no WATCHDOG=1 while the self-check fails: {blocked:?}"
    );
    node.flush_blackholes();
    let back = recv(Duration::from_secs(3));
    assert!(
        back.iter().any(|m| m == "WATCHDOG=1"),
        "pings again: {back:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_systemd_units_verify() {
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd");
    let dir = temp_dir();
    // systemd-analyze wants the ExecStart binary to exist: point it at ours.
    let mut units = Vec::new();
    for entry in std::fs::read_dir(&dist).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let out = dir.join(path.file_name().unwrap());
        std::fs::write(
            &out,
            text.replace("/usr/bin/spartan", spartan_bin().to_str().unwrap()),
        )
        .unwrap();
        units.push(out);
    }
    assert_eq!(units.len(), 6);
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze verify: {err}"
    );
    let service = std::fs::read_to_string(dist.join("spartan.service")).unwrap();
    for line in ["Type=notify", "WatchdogSec=", "Restart=always"] {
        assert!(service.contains(line), "{line}");
    }
    let timer = std::fs::read_to_string(dist.join("spartan-watchdog.timer")).unwrap();
    assert!(timer.contains("OnBootSec=1min") && timer.contains("OnUnitActiveSec=5min"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn root_a_self_check_slower_than_the_units_watchdog_is_refused() {
    let node = spartan_node("spg");
    // WatchdogSec=4s and the default self-check every 5 s.
    let mut s = Spartan::spawn_with_env(Some(&node), &args(&[]), &[("WATCHDOG_USEC", "4000000")]);
    let status = s
        .wait_exit(Duration::from_secs(10))
        .expect("it refuses to start");
    assert!(!status.success());
    let log = s.log_text();
    assert!(
        log.contains("self_check_interval_ms") && log.contains("WatchdogSec"),
        "{log}"
    );
}
