//! Listen sockets passed in by systemd socket activation (sd_listen_fds(3)):
//! `LISTEN_PID` is this process, `LISTEN_FDS` sockets start at descriptor
//! 3. systemd keeps them open while no daemon runs, so queries that arrive
//! during a restart wait in their queues instead of being refused.

use std::{
    net::SocketAddr,
    os::fd::{FromRawFd, OwnedFd},
};

use anyhow::{Result, bail};
use socket2::{Socket, Type};

/// The first passed descriptor (SD_LISTEN_FDS_START).
const FIRST_FD: i32 = 3;

/// One passed socket: what kind, on which address.
pub struct Inherited {
    pub socket: Socket,
    pub datagram: bool,
    pub addr: SocketAddr,
}

/// The sockets passed to this process, if any. (The variables stay: the
/// daemon starts no process that could take them for its own, and
/// `LISTEN_PID` names this one only.)
pub fn take() -> Result<Vec<Inherited>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let count = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(Vec::new());
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        // Meant for another process (an ancestor that did not clear them).
        return Ok(Vec::new());
    }
    let count: i32 = count
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("LISTEN_FDS={count:?} is not a number"))?;
    let mut out = Vec::new();
    for fd in FIRST_FD..FIRST_FD + count {
        // SAFETY: systemd passed these descriptors to us, open, for us to own.
        let socket = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let kind = socket.r#type()?;
        let Some(addr) = socket.local_addr()?.as_socket() else {
            bail!("passed descriptor {fd} is not an IP socket");
        };
        socket.set_nonblocking(true)?;
        out.push(Inherited {
            socket,
            datagram: kind == Type::DGRAM,
            addr,
        });
    }
    Ok(out)
}
