//! BPF_PROG_TEST_RUN on a loaded program, through aya's [`TestRun`]: runs
//! it on a crafted frame and returns the verdict and the frame as the
//! program left it.

use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};

/// Which of the object's programs to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The fast path itself.
    Spartan,
    /// The do-nothing program beside it (returns XDP_PASS at once): the
    /// benchmark's floor.
    Floor,
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone)]
pub struct TestRunOutput {
    /// The program's return value (the XDP action).
    pub action: u32,
    /// The frame after the program ran.
    pub frame: Vec<u8>,
    /// Mean nanoseconds per run, as the kernel measured it.
    pub duration_ns: u64,
}

/// Runs `program` `repeat` times (at least once) on `frame`.
pub(super) fn run(program: &Xdp, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
    // Room for the largest answer the program writes (it grows the frame
    // with bpf_xdp_adjust_tail up to a page).
    let mut out = vec![0u8; 4096];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutput {
        action: result.return_value,
        frame: out,
        duration_ns: result.duration.as_nanos() as u64,
    })
}
