//! The Debian package from `cargo xtask deb`: what it holds, and that it
//! installs into (and purges cleanly from) a throwaway root, never the
//! machine the tests run on.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use tests::{netns::unique, require_root};

/// The package `cargo xtask test` built (SPARTAN_DEB), or the one
/// `cargo xtask deb` left in target/debian.
fn package() -> PathBuf {
    if let Some(p) = std::env::var_os("SPARTAN_DEB") {
        return PathBuf::from(p);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    std::fs::read_dir(&dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no package: run `cargo xtask test` or `cargo xtask deb` first"))
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file the package must install, with its mode.
const EXPECTED: &[(&str, u32)] = &[
    ("usr/bin/spartan", 0o755),
    ("etc/spartan/spartan.toml", 0o644),
    ("lib/systemd/system/spartan.service", 0o644),
    ("lib/systemd/system/spartan.socket", 0o644),
    ("lib/systemd/system/spartan-watchdog.service", 0o644),
    ("lib/systemd/system/spartan-watchdog.timer", 0o644),
    ("lib/systemd/system/spartan-genresolv.service", 0o644),
    ("lib/systemd/system/spartan-genresolv.timer", 0o644),
    ("usr/share/doc/spartan/README.md", 0o644),
    ("usr/share/spartan/grafana/spartan.json", 0o644),
];

/// A directory removed with the value.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_package_holds_the_binary_units_configuration_and_scripts() {
    let deb = package();
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for (path, mode) in EXPECTED {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!("./{path}")))
            .unwrap_or_else(|| panic!("{path} missing from the package:\n{listing}"));
        let want = if *mode == 0o755 {
            "-rwxr-xr-x root/root"
        } else {
            "-rw-r--r-- root/root"
        };
        assert!(line.starts_with(want), "{path}: {line}");
    }
    let fields = output(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(&deb)
            .args(["Package", "Version", "Depends"]),
    );
    assert!(fields.contains("Package: spartan"), "{fields}");
    assert!(
        fields.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{fields}"
    );
    // The configuration is a conffile: an upgrade keeps the operator's edits.
    let conffiles = output(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles.trim(), "/etc/spartan/spartan.toml");
    // The units run the packaged binary.
    let dir = TempDir::new("deb");
    let files = dir.0.join("files");
    output(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(&deb)
            .arg(&files),
    );
    let unit = std::fs::read_to_string(files.join("lib/systemd/system/spartan.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/spartan run"), "{unit}");

    // The maintainer scripts parse, and where systemd is not running them
    // (a throwaway root, DPKG_ROOT set) they call no systemctl at all.
    let control = dir.0.join("control");
    output(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(&deb)
            .arg(&control),
    );
    let calls = dir.0.join("systemctl-calls");
    let fake_bin = dir.0.join("bin");
    std::fs::create_dir_all(&fake_bin).unwrap();
    for tool in ["systemctl", "spartan"] {
        let fake = fake_bin.join(tool);
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho {tool} \"$@\" >> {}\n", calls.display()),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (script, args) in [
        ("postinst", &["configure", ""][..]),
        ("postinst", &["configure", "0.0.9"][..]),
        ("prerm", &["remove"][..]),
        ("postrm", &["purge"][..]),
    ] {
        let file = control.join(script);
        output(Command::new("sh").arg("-n").arg(&file));
        output(
            Command::new(&file)
                .args(args)
                .env("DPKG_ROOT", &dir.0)
                .env("PATH", &path),
        );
    }
    assert!(
        !calls.exists(),
        "scripts ran commands in a throwaway root: {}",
        std::fs::read_to_string(&calls).unwrap_or_default()
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("systemctl daemon-reload"), "{postinst}");
    // Nothing is enabled or started (the operator is told how, in echo).
    for line in postinst.lines().map(str::trim) {
        let command = !line.starts_with("echo") && !line.starts_with('#');
        assert!(
            !(command && (line.contains("systemctl enable") || line.contains("systemctl start"))),
            "a fresh install must start nothing: {line}"
        );
    }
}

#[test]
fn root_the_package_installs_into_a_throwaway_root_and_purges_clean() {
    require_root();
    let deb = package();
    let root = TempDir::new("debroot");
    let admin = root.0.join("var/lib/dpkg");
    for dir in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::write(admin.join("status"), "").unwrap();
    // The root holds no libc6 or systemd package to satisfy Depends; the
    // scripts run without a chroot and see DPKG_ROOT.
    let dpkg = |args: &[&str]| {
        output(
            Command::new("dpkg")
                .arg(format!("--root={}", root.0.display()))
                .args([
                    "--force-script-chrootless",
                    "--force-depends",
                    "--log=/dev/null",
                ])
                .args(args),
        )
    };
    dpkg(&["--install", deb.to_str().unwrap()]);
    for (path, mode) in EXPECTED {
        let meta = std::fs::metadata(root.0.join(path))
            .unwrap_or_else(|e| panic!("{path} not installed: {e}"));
        assert_eq!(meta.permissions().mode() & 0o7777, *mode, "{path}");
    }
    let version = output(Command::new(root.0.join("usr/bin/spartan")).arg("--version"));
    assert!(version.starts_with("spartan "), "{version}");
    let status = std::fs::read_to_string(admin.join("status")).unwrap();
    assert!(
        status.contains("Package: spartan") && status.contains("install ok installed"),
        "{status}"
    );
    // An operator's edit survives a reinstall (a conffile).
    let config = root.0.join("etc/spartan/spartan.toml");
    let edited = std::fs::read_to_string(&config).unwrap() + "\n# edited by the operator\n";
    std::fs::write(&config, &edited).unwrap();
    dpkg(&["--force-confold", "--install", deb.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    // Purged: every file of the package gone, the conffile too.
    dpkg(&["--purge", "spartan"]);
    for (path, _) in EXPECTED {
        assert!(!root.0.join(path).exists(), "{path} left after purge");
    }
    assert!(!Path::new(&config).exists());
}
