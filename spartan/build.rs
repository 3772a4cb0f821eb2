//! Builds the XDP program (`spartan-ebpf`) for `bpfel-unknown-none` with the
//! Debian eBPF toolchain and hands its path to the crate, which embeds it.
//!
//! The toolchain (see the README): Debian `rustc-web`/`cargo-web` (a stable
//! compiler, allowed aya-ebpf's one unstable feature through a crate-scoped
//! `RUSTC_BOOTSTRAP`), `libstd-rust-web-dev-bpf` (a prebuilt `core` for the
//! BPF target) and `bpf-linker`. `cargo xtask setup` installs all of it.

use std::{
    env,
    io::BufReader,
    path::{Path, PathBuf},
    process::{Command, Stdio, exit},
};

use cargo_metadata::{Artifact, Message};

const TARGET: &str = "bpfel-unknown-none";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest_dir.parent().unwrap().to_path_buf();
    let ebpf_crate = workspace.join("spartan-ebpf");
    let common_crate = workspace.join("spartan-common");
    for path in [
        ebpf_crate.join("src"),
        ebpf_crate.join("Cargo.toml"),
        common_crate.join("src"),
        common_crate.join("Cargo.toml"),
    ] {
        println!("cargo::rerun-if-changed={}", path.display());
    }
    println!("cargo::rerun-if-env-changed=SPARTAN_BPF_OBJECT");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let embedded = out_dir.join("spartan.bpf.o");

    // An operator may hand in a prebuilt object instead of building one.
    if let Some(prebuilt) = env::var_os("SPARTAN_BPF_OBJECT") {
        std::fs::copy(&prebuilt, &embedded).unwrap_or_else(|e| {
            fail(&format!(
                "SPARTAN_BPF_OBJECT={}: {e}",
                Path::new(&prebuilt).display()
            ))
        });
        println!("cargo::rustc-env=SPARTAN_BPF_OBJ={}", embedded.display());
        return;
    }

    let path = linker_path();
    let linker = match find_linker(&path) {
        Some(linker) => linker,
        None => fail("the eBPF toolchain is missing (bpf-linker): run `cargo xtask setup`"),
    };
    if let Some(missing) = missing_toolchain_piece() {
        fail(&format!(
            "the eBPF toolchain is missing ({missing}): run `cargo xtask setup`"
        ));
    }
    // A new linker (another LLVM) may link another object.
    println!("cargo::rerun-if-changed={}", linker.display());

    let target_dir = workspace.join("target").join("ebpf");
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--release",
            "--package",
            "spartan-ebpf",
            "--bin",
            "spartan-xdp",
        ])
        .args(["--target", TARGET])
        // The object's path comes from cargo's own artifact message;
        // diagnostics still go to stderr, rendered.
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .arg("--target-dir")
        .arg(&target_dir)
        .env("PATH", &path)
        .env("RUSTC", DEBIAN_RUSTC)
        // aya-ebpf needs `asm_experimental_arch`; allow it for that crate only.
        .env("RUSTC_BOOTSTRAP", "aya_ebpf")
        .env("CARGO_ENCODED_RUSTFLAGS", ebpf_rustflags().join("\u{1f}"));
    // Nothing of the outer (host, possibly clippy) build may leak in.
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTDOC",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| fail(&format!("running {DEBIAN_CARGO}: {e}")));
    let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut object = None;
    for message in Message::parse_stream(stdout) {
        match message {
            Ok(Message::CompilerArtifact(Artifact {
                executable: Some(executable),
                target,
                ..
            })) if target.name == "spartan-xdp" => object = Some(executable.into_std_path_buf()),
            Ok(_) => {}
            Err(e) => fail(&format!("reading cargo's messages: {e}")),
        }
    }
    let status = child
        .wait()
        .unwrap_or_else(|e| fail(&format!("running {DEBIAN_CARGO}: {e}")));
    if !status.success() {
        fail("building the XDP program (spartan-ebpf) failed; see the errors above");
    }
    let object = object.unwrap_or_else(|| fail("cargo built no spartan-xdp object"));
    std::fs::copy(&object, &embedded)
        .unwrap_or_else(|e| fail(&format!("copying {}: {e}", object.display())));
    println!("cargo::rustc-env=SPARTAN_BPF_OBJ={}", embedded.display());
}

/// Flags of the eBPF build.
fn ebpf_rustflags() -> Vec<&'static str> {
    let mut flags = vec![
        // Debug info makes bpf-linker emit BTF, which the BTF maps need and
        // which lets bpftool print keys and values readably.
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
        "-Cno-vectorize-loops",
        "-Cno-vectorize-slp",
    ];
    // Packet fields sit at any offset: without this, LLVM splits every
    // wider read and write of them into single bytes. The verifier allows
    // misaligned packet and map value access on machines that handle it
    // (x86, arm64). LLVM 22 has the feature; bpf-linker is built against
    // the LLVM of Debian's rustc (see `cargo xtask setup`).
    if debian_llvm_major().is_some_and(|major| major >= 22) {
        flags.push("-Clink-arg=--cpu-features=+allows-misaligned-mem-access");
    } else {
        println!(
            "cargo::warning=LLVM before 22: the XDP program is built with byte-wise packet access (slower)"
        );
    }
    flags
}

/// The LLVM major of Debian's rustc, which bpf-linker is built against.
fn debian_llvm_major() -> Option<u32> {
    let out = Command::new(DEBIAN_RUSTC).arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// PATH with cargo's install directory first, where `cargo xtask setup`
/// puts bpf-linker.
fn linker_path() -> std::ffi::OsString {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    let mut dirs = vec![cargo_home.join("bin")];
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).unwrap()
}

/// The bpf-linker that PATH gives.
fn find_linker(path: &std::ffi::OsStr) -> Option<PathBuf> {
    env::split_paths(path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|candidate| candidate.is_file())
}

fn missing_toolchain_piece() -> Option<String> {
    if !Path::new(DEBIAN_RUSTC).exists() || !Path::new(DEBIAN_CARGO).exists() {
        return Some("Debian rustc-web/cargo-web".into());
    }
    if !Path::new("/usr/lib/rustlib").join(TARGET).exists() {
        return Some("libstd-rust-web-dev-bpf".into());
    }
    None
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    println!("cargo::error={message}");
    exit(1);
}
