//! `cargo xtask`: set up, build, run, test and benchmark Spartan.

mod bench;
mod cachelab;
mod deb;
mod lab;
mod restart;
mod setup;
mod topology;
mod util;

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use util::{cargo, run, workspace_root};

#[derive(Parser)]
#[command(about = "Build, run, test and benchmark Spartan")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: Debian packages and bpf-linker (idempotent).
    Setup {
        /// Also install the benchmark's packages (dnsperf and the peers).
        #[arg(long)]
        bench: bool,
    },
    /// Build the XDP object and the `spartan` binary that embeds it.
    Build(BuildOpts),
    /// Build, then start `spartan run` on the embedded default configuration.
    Run {
        #[command(flatten)]
        build: BuildOpts,
        /// Arguments for `spartan run`, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then run every test: unit, BPF_PROG_TEST_RUN, namespaces.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Build, then run the benchmarks (see the README).
    Bench(bench::BenchOpts),
    /// Build the release binary, then a Debian package of it with the
    /// units, the configuration and the dashboard.
    Deb {
        /// Where the package goes.
        #[arg(long, default_value = "target/debian")]
        out_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct BuildOpts {
    /// A debug build instead of release.
    #[arg(long)]
    debug: bool,
}

fn main() -> std::process::ExitCode {
    match run_cli(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_cli(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup { bench } => setup::setup(bench),
        Cmd::Build(opts) => {
            setup::setup(false)?;
            build(opts.debug).map(|_| ())
        }
        Cmd::Run { build: opts, args } => {
            setup::setup(false)?;
            let bin = build(opts.debug)?;
            let status = Command::new(&bin).arg("run").args(&args).status()?;
            if !status.success() {
                bail!("spartan exited with {status}");
            }
            Ok(())
        }
        Cmd::Test { no_lint, filter } => {
            setup::setup(false)?;
            test(no_lint, filter)
        }
        Cmd::Deb { out_dir } => {
            setup::setup(false)?;
            let bin = build(false)?;
            std::fs::create_dir_all(&out_dir)?;
            let deb = deb::build(&bin, &out_dir)?;
            println!("{}", deb.display());
            Ok(())
        }
        Cmd::Bench(opts) => {
            setup::setup(true)?;
            let bin = build(false)?;
            bench::bench(&bin, opts)
        }
    }
}

/// Builds the binary (its build script builds and embeds the XDP object).
fn build(debug: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "spartan", "--bin", "spartan"]);
    if !debug {
        cmd.arg("--release");
    }
    run(&mut cmd)?;
    let profile = if debug { "debug" } else { "release" };
    Ok(workspace_root()
        .join("target")
        .join(profile)
        .join("spartan"))
}

/// Builds the XDP cost benchmark (a binary of the `tests` package, beside
/// the frames the tests use), in release.
fn build_bench_xdp() -> Result<PathBuf> {
    run(cargo().args([
        "build",
        "--release",
        "--package",
        "tests",
        "--bin",
        "bench-xdp",
    ]))?;
    Ok(workspace_root().join("target/release/bench-xdp"))
}

fn nextest_available() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test(no_lint: bool, filter: Option<String>) -> Result<()> {
    let bin = build(false)?;
    if !no_lint {
        run(cargo().args(["fmt", "--all", "--check"]))?;
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--release",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    let root = setup::is_root();
    if !root {
        println!(
            "xtask: not root: tests named root_* (BPF, network namespaces) are SKIPPED; run as root to include them"
        );
    }
    let debs = workspace_root().join("target").join("debian");
    std::fs::create_dir_all(&debs)?;
    let deb = deb::build(&bin, &debs)?;
    let mut cmd = cargo();
    cmd.env("SPARTAN_BIN", &bin).env("SPARTAN_DEB", &deb);
    if nextest_available() {
        cmd.args([
            "nextest",
            "run",
            "--workspace",
            "--release",
            "--no-fail-fast",
        ]);
        // Namespace and BPF tests are heavy; two cores, two at a time.
        cmd.args(["--test-threads", "2"]);
        let mut expr = String::from("all()");
        if let Some(f) = &filter {
            expr = format!("test(/{f}/)");
        }
        if !root {
            expr = format!("({expr}) and not test(/^root_/)");
        }
        cmd.args(["-E", &expr]);
    } else {
        cmd.args(["test", "--workspace", "--release", "--no-fail-fast", "--"]);
        if let Some(f) = &filter {
            cmd.arg(f);
        }
        if !root {
            cmd.args(["--skip", "root_"]);
        }
        cmd.args(["--test-threads", "2"]);
    }
    run(&mut cmd)
}
