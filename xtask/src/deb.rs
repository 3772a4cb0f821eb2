//! `cargo xtask deb`: a Debian package of the release binary, the systemd
//! units, the configuration (a conffile), the README the units point at
//! and the Grafana dashboard, with maintainer scripts that reload systemd
//! and start nothing on a fresh install.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::util::{run, workspace_root};

/// Where each shipped file goes in the package: (source in the
/// repository, destination, mode).
const FILES: &[(&str, &str, u32)] = &[
    ("dist/spartan.toml", "etc/spartan/spartan.toml", 0o644),
    (
        "dist/systemd/spartan.service",
        "lib/systemd/system/spartan.service",
        0o644,
    ),
    (
        "dist/systemd/spartan.socket",
        "lib/systemd/system/spartan.socket",
        0o644,
    ),
    (
        "dist/systemd/spartan-watchdog.service",
        "lib/systemd/system/spartan-watchdog.service",
        0o644,
    ),
    (
        "dist/systemd/spartan-watchdog.timer",
        "lib/systemd/system/spartan-watchdog.timer",
        0o644,
    ),
    (
        "dist/systemd/spartan-genresolv.service",
        "lib/systemd/system/spartan-genresolv.service",
        0o644,
    ),
    (
        "dist/systemd/spartan-genresolv.timer",
        "lib/systemd/system/spartan-genresolv.timer",
        0o644,
    ),
    ("README.md", "usr/share/doc/spartan/README.md", 0o644),
    (
        "dist/grafana/spartan.json",
        "usr/share/spartan/grafana/spartan.json",
        0o644,
    ),
];

/// Files dpkg keeps the operator's edits of.
const CONFFILES: &[&str] = &["/etc/spartan/spartan.toml"];

/// Maintainer scripts, from `dist/debian/`.
const SCRIPTS: &[&str] = &["postinst", "prerm", "postrm"];

/// Builds the package from the release binary `bin` into `out_dir`;
/// returns its path.
pub fn build(bin: &Path, out_dir: &Path) -> Result<PathBuf> {
    let root = workspace_root();
    // xtask's version is the workspace's, as is spartan's.
    let version = env!("CARGO_PKG_VERSION");
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .context("dpkg --print-architecture")?
            .stdout,
    )?
    .trim()
    .to_string();
    let stage = out_dir.join(format!("spartan_{version}_{arch}"));
    let _ = fs::remove_dir_all(&stage);
    let staged_bin = stage.join("usr/bin/spartan");
    install(bin, &staged_bin, 0o755)?;
    // The release profile keeps debug info for profiling; a package need
    // not (the embedded XDP object is data and stays).
    run(Command::new("strip").arg("--strip-debug").arg(&staged_bin))
        .context("strip (Debian package binutils)")?;
    for (src, dst, mode) in FILES {
        install(&root.join(src), &stage.join(dst), *mode)?;
    }
    let debian = stage.join("DEBIAN");
    for script in SCRIPTS {
        install(
            &root.join("dist/debian").join(script),
            &debian.join(script),
            0o755,
        )?;
    }
    fs::write(debian.join("conffiles"), CONFFILES.join("\n") + "\n")?;
    fs::write(
        debian.join("control"),
        control(version, &arch, staged_bytes(&stage)?.div_ceil(1024)),
    )?;
    let deb = out_dir.join(format!("spartan_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: spartan\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: Spartan developers <spartan@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6, systemd\n\
         Section: net\n\
         Priority: optional\n\
         Description: node-local DNS resolver with an XDP fast path\n \
         Spartan answers a node's DNS at 198.51.100.1-3: its own names, the\n \
         ZooKeeper masters, and every other name forwarded to several upstreams\n \
         at once, with hot answers served from the kernel by an XDP program.\n"
    )
}

/// Copies `src` to `dst` with `mode`, creating the directories.
fn install(src: &Path, dst: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(dst.parent().context("a destination in a directory")?)?;
    fs::copy(src, dst).with_context(|| format!("copying {}", src.display()))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The bytes of the staged files, DEBIAN/ left out (Installed-Size).
fn staged_bytes(dir: &Path) -> Result<u64> {
    let mut bytes = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "DEBIAN" {
            continue;
        }
        let meta = entry.metadata()?;
        bytes += if meta.is_dir() {
            staged_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(bytes)
}
