//! A private bpffs pin directory per test, removed on drop.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `/sys/fs/bpf/spartan-test-<pid>-<n>`, removed with everything in it when
/// dropped (also when the test panics).
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new() -> Self {
        spartan::fastpath::ensure_bpffs(Path::new("/sys/fs/bpf")).expect("bpffs");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/spartan-test-{}-{n}",
            std::process::id()
        ));
        let _ = spartan::fastpath::FastPath::remove_pins(&dir);
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = spartan::fastpath::FastPath::remove_pins(&self.0);
        // The daemon's files in /run/spartan for this pin directory: its
        // lock, its record of additions, its control socket, and the attach
        // mode noted per interface (`xdp-mode<tag>-<interface>`).
        for what in ["lock", "added", "control"] {
            let _ = std::fs::remove_file(spartan::fastpath::run_file(&self.0, what));
        }
        let modes = spartan::fastpath::run_file(&self.0, "xdp-mode");
        if let (Some(dir), Some(prefix)) = (modes.parent(), modes.file_name()) {
            let prefix = format!("{}-", prefix.to_string_lossy());
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}
