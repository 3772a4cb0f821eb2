//! `cargo xtask setup`: installs what the build and the tests need, and
//! nothing that is already there.
//!
//! The eBPF toolchain (see the README): Debian's `rustc-web`/`cargo-web`,
//! `libstd-rust-web-dev-bpf` (a prebuilt `core` for the BPF target) and
//! `bpf-linker` built against Debian's LLVM of the same major version as
//! rustc-web. That major is read from the compiler, here and nowhere else,
//! so that a Debian update to a newer LLVM needs no edit.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::util::{cargo_home, run};

pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// The compiler and `core` for the BPF target.
const TOOLCHAIN_PACKAGES: &[&str] = &["rustc-web", "cargo-web", "libstd-rust-web-dev-bpf"];

/// Tools `run` and the tests use: map inspection, namespaces, DNS clients,
/// real DNS servers as upstreams.
const TOOL_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "iptables",
    "dnsutils",
    "knot-dnsutils",
    "nsd",
    "procps",
    "systemd",
    // `strip` for `cargo xtask deb` (which the tests run).
    "binutils",
];

/// The benchmark's client and the peers Spartan is measured against.
const BENCH_PACKAGES: &[&str] = &[
    "dnsperf",
    "strace",
    "dnsmasq-base",
    "dnsdist",
    "unbound",
    "ethtool",
    "fonts-dejavu-core",
];

/// Packages bpf-linker links against, for LLVM major `major`.
fn llvm_packages(major: u32) -> Vec<String> {
    vec![
        format!("llvm-{major}-dev"),
        format!("libpolly-{major}-dev"),
        "zlib1g-dev".into(),
        "libzstd-dev".into(),
    ]
}

/// Installs what is missing; `bench` adds the benchmark's packages.
pub fn setup(bench: bool) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask setup` installs Debian packages and needs root");
    }
    let mut apt = Apt::default();
    apt.ensure(TOOLCHAIN_PACKAGES)?;
    let major = llvm_major()?;
    apt.ensure(&llvm_packages(major))?;
    apt.ensure(TOOL_PACKAGES)?;
    if bench {
        apt.ensure(BENCH_PACKAGES)?;
    }
    ensure_bpf_linker(major)?;
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: no failure mode.
    unsafe { libc::geteuid() == 0 }
}

/// LLVM major version of Debian's rustc, from `rustc -vV`.
pub fn llvm_major() -> Result<u32> {
    let out = Command::new(DEBIAN_RUSTC)
        .arg("-vV")
        .output()
        .with_context(|| format!("running {DEBIAN_RUSTC} -vV"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_llvm_major(&text)
        .with_context(|| format!("no LLVM version in `{DEBIAN_RUSTC} -vV`:\n{text}"))
}

fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

#[derive(Default)]
struct Apt {
    updated: bool,
}

impl Apt {
    fn ensure<S: AsRef<str>>(&mut self, packages: &[S]) -> Result<()> {
        let missing: Vec<&str> = packages
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| !installed(p))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        println!("setup: installing Debian packages: {}", missing.join(" "));
        if !self.updated {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        Ok(())
    }
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

pub fn bpf_linker_path() -> PathBuf {
    cargo_home().join("bin").join("bpf-linker")
}

/// bpf-linker is there, runs, and was built for LLVM `major`.
fn bpf_linker_ok(major: u32) -> bool {
    let bin = bpf_linker_path();
    let runs = Command::new(&bin)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    runs && installed_features(&cargo_home()).is_some_and(|f| f.contains(&format!("llvm-{major}")))
}

/// Features bpf-linker was installed with, from cargo's install record.
fn installed_features(cargo_home: &Path) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(cargo_home.join(".crates2.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let installs = json.get("installs")?.as_object()?;
    let (_, entry) = installs
        .iter()
        .find(|(k, _)| k.starts_with(&format!("bpf-linker {BPF_LINKER_VERSION} ")))?;
    Some(
        entry
            .get("features")?
            .as_array()?
            .iter()
            .filter_map(|f| f.as_str().map(String::from))
            .collect(),
    )
}

fn ensure_bpf_linker(major: u32) -> Result<()> {
    if bpf_linker_ok(major) {
        return Ok(());
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (about a minute)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--no-default-features",
        ])
        .args(["--version", BPF_LINKER_VERSION])
        .args(["--features", &format!("llvm-{major}")])
        .env("LLVM_PREFIX", format!("/usr/lib/llvm-{major}")))?;
    if !bpf_linker_ok(major) {
        bail!("bpf-linker was installed but does not run");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_is_read_from_rustc() {
        let vv = "rustc 1.96.0 (ac68faa20 2026-05-25)\nhost: x86_64-unknown-linux-gnu\nLLVM version: 22.1.8\n";
        assert_eq!(parse_llvm_major(vv), Some(22));
        assert_eq!(parse_llvm_major("LLVM version: 23.0.0"), Some(23));
        assert_eq!(parse_llvm_major("rustc 1.96.0"), None);
    }
}
