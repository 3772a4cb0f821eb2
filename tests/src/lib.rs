//! Helpers for Spartan's end-to-end tests.
//!
//! Tests that need root (BPF, network namespaces) are named `root_*`.
//! `cargo xtask test` filters them out, and says so, when not run as root;
//! run by hand without root they fail with a message instead of passing.

pub mod frame;
pub mod pins;

/// Panics with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (BPF and network namespaces); run it as root or via `cargo xtask test`"
        );
    }
}
pub mod client;
pub mod daemon;
pub mod exhibitor;
pub mod fault;
pub mod netns;
pub mod nsd;
