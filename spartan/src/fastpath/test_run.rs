//! BPF_PROG_TEST_RUN on a loaded program: runs it on a crafted frame and
//! returns the verdict and the frame as the program left it.
//!
//! aya keeps its wrapper private, so this is the raw `bpf()` syscall.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone)]
pub struct TestRunOutput {
    /// The program's return value (the XDP action).
    pub action: u32,
    /// The frame after the program ran.
    pub frame: Vec<u8>,
    /// Mean nanoseconds per run, as the kernel measured it.
    pub duration_ns: u32,
}

/// Runs the program `repeat` times (at least once) on `frame`.
pub fn run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> io::Result<TestRunOutput> {
    let mut out = vec![0u8; 4096];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    // SAFETY: `attr` points at buffers that outlive the call; the kernel
    // writes at most `data_size_out` bytes into `out`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOutput {
        action: attr.retval,
        frame: out,
        duration_ns: attr.duration,
    })
}
