//! `cargo xtask bench`.

use std::path::Path;

use anyhow::Result;

#[derive(clap::Args)]
pub struct BenchOpts {
    /// A short smoke run.
    #[arg(long)]
    pub quick: bool,
}

pub fn bench(bin: &Path, opts: BenchOpts) -> Result<()> {
    crate::util::run(
        std::process::Command::new(bin)
            .args(["bench-xdp"])
            .args(if opts.quick {
                vec!["--repeat", "100000"]
            } else {
                vec![]
            }),
    )
}
