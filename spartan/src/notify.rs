//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): a datagram
//! to `$NOTIFY_SOCKET`. Without that variable every call does nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (for example `READY=1`) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let result = if let Some(abstract_name) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Called after each passing self-check: READY=1 the first time, and
/// WATCHDOG=1 every time. A daemon whose self-check fails stops pinging,
/// and systemd's `WatchdogSec=` restarts it.
pub fn watchdog_ping() {
    static READY: std::sync::Once = std::sync::Once::new();
    READY.call_once(|| notify("READY=1"));
    notify("WATCHDOG=1");
}
