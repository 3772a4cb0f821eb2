//! One daemon per pin directory: the kernel path (its maps, links and the
//! answers they hold) has exactly one writer. The lock is an `flock` on a
//! file in /run/spartan named after the pin directory, holding the owner's
//! PID; the kernel drops it when the owner exits, however it exits.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use super::run_file;

/// Held for the daemon's life.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock for `pin_dir`, or fails naming the daemon holding it.
    pub fn acquire(pin_dir: &Path) -> Result<Self> {
        let path = run_file(pin_dir, "lock");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut owner = String::new();
            let _ = file.read_to_string(&mut owner);
            bail!(
                "another Spartan (pid {}) runs with pin directory {}: stop it first \
                 (`systemctl stop spartan`), or give this one its own --pin-dir and --listen",
                owner.trim(),
                pin_dir.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file, path })
    }
}
