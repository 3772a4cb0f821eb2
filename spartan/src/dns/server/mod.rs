//! The DNS servers run on one thread of their own, on a current-thread
//! runtime: sockets, handler and forwarder share it without locks, and a
//! query is received, forwarded, matched and answered without waking
//! another thread. The control plane (API, discovery, signals) runs
//! elsewhere and shares only atomics and the read-mostly zones and routes.

mod inherited;
pub mod tcp;
mod udp;

use std::{net::SocketAddr, rc::Rc, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::{sync::oneshot, task::LocalSet, time::Instant};

pub use tcp::TcpLimits;

use super::RequestHandler;
use crate::{
    forward::{Forwarder, Limits, Router},
    local_answers::LocalAnswers,
    stats::Stats,
};

/// What the DNS thread serves with.
pub struct Setup {
    pub local: Arc<LocalAnswers>,
    pub router: Arc<Router>,
    pub stats: Arc<Stats>,
    pub cache: Arc<crate::cache::AnswerCache>,
    pub limits: Limits,
    pub tcp: TcpLimits,
}

/// One address's sockets, bound before the thread starts.
struct Bound {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

/// The listen sockets, bound first of all (before the kernel path is
/// touched): a daemon that cannot have them never writes a kernel map.
pub struct Listeners(Vec<Bound>);

impl Listeners {
    /// The sockets systemd passed (socket activation), which must be exactly
    /// a UDP and a TCP socket on each of `addrs`; else, when none were
    /// passed, UDP and TCP bound on every address.
    pub fn inherited_or_bound(addrs: &[SocketAddr]) -> Result<(Self, bool)> {
        let mut passed = inherited::take()?;
        if passed.is_empty() {
            return Ok((Self::bind(addrs)?, false));
        }
        let mut bound = Vec::new();
        for addr in addrs {
            let mut take = |datagram: bool| {
                let i = passed
                    .iter()
                    .position(|p| p.datagram == datagram && p.addr == *addr);
                i.map(|i| passed.remove(i).socket)
            };
            let (Some(udp), Some(tcp)) = (take(true), take(false)) else {
                anyhow::bail!(
                    "the sockets systemd passed do not cover {addr} over UDP and TCP: make \
                     spartan.socket's ListenDatagram/ListenStream match listen_addresses and dns_port"
                );
            };
            bound.push(Bound {
                udp: udp.into(),
                tcp: tcp.into(),
            });
        }
        if let Some(extra) = passed.first() {
            anyhow::bail!(
                "systemd passed a socket on {} ({}) that is not a listen address: make \
                 spartan.socket match listen_addresses and dns_port",
                extra.addr,
                if extra.datagram { "UDP" } else { "TCP" }
            );
        }
        Ok((Self(bound), true))
    }

    /// Binds UDP and TCP on every address.
    pub fn bind(addrs: &[SocketAddr]) -> Result<Self> {
        Ok(Self(addrs.iter().map(|a| bind(*a)).collect::<Result<_>>()?))
    }
}

fn bind(addr: SocketAddr) -> Result<Bound> {
    let udp = std::net::UdpSocket::bind(addr).with_context(|| format!("binding UDP {addr}"))?;
    // TCP on the same port as UDP, also when UDP's was picked by the kernel.
    let tcp_addr = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
    let tcp =
        std::net::TcpListener::bind(tcp_addr).with_context(|| format!("binding TCP {tcp_addr}"))?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok(Bound { udp, tcp })
}

/// The running DNS thread.
pub struct DnsServer {
    stop: oneshot::Sender<Duration>,
    done: oneshot::Receiver<()>,
    thread: std::thread::JoinHandle<()>,
    pub udp_addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Serves on `listeners` from a new thread.
    pub fn start(listeners: Listeners, setup: Setup) -> Result<Self> {
        let bound = listeners.0;
        let udp_addrs = bound
            .iter()
            .map(|b| b.udp.local_addr())
            .collect::<std::io::Result<_>>()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the DNS thread's runtime")?;
        let (stop, stopped) = oneshot::channel();
        let (finished, done) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("spartan-dns".into())
            .spawn(move || {
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    LocalSet::new().block_on(&runtime, serve(bound, setup, stopped))
                }));
                if served.is_err() {
                    // Without this thread nothing answers: end the process
                    // now, so that systemd restarts it at once rather than
                    // after the watchdog's timeout.
                    tracing::error!("the DNS thread panicked: exiting");
                    std::process::exit(70);
                }
                let _ = finished.send(());
            })
            .context("starting the DNS thread")?;
        Ok(Self {
            stop,
            done,
            thread,
            udp_addrs,
        })
    }

    /// Stops reading queries, gives those in flight up to `grace` to be
    /// answered, and ends the thread.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(grace);
        let _ = self.done.await;
        let _ = self.thread.join();
    }
}

async fn serve(bound: Vec<Bound>, setup: Setup, stop: oneshot::Receiver<Duration>) {
    let forwarder = Forwarder::new(setup.router, setup.stats.clone(), setup.limits);
    let handler = Rc::new(RequestHandler::new(
        setup.local,
        forwarder.clone(),
        setup.stats,
        setup.cache,
    ));
    let tcp_state = Rc::new(tcp::TcpState::default());
    let mut listeners = Vec::new();
    for b in bound {
        let udp = crate::udp_batch::DnsSocket::new(b.udp).expect("inside the runtime");
        let tcp = tokio::net::TcpListener::from_std(b.tcp).expect("inside the runtime");
        listeners.push(tokio::task::spawn_local(udp::serve(
            Rc::new(udp),
            handler.clone(),
        )));
        listeners.push(tokio::task::spawn_local(tcp::serve(
            tcp,
            handler.clone(),
            setup.tcp,
            tcp_state.clone(),
        )));
    }
    let grace = stop.await.unwrap_or_default();
    // No new query is read (what waits in the sockets' queues stays there,
    // for the next daemon when systemd holds the sockets); those held are
    // answered within the grace.
    for l in &listeners {
        l.abort();
    }
    tcp_state.begin_stop();
    let until = Instant::now() + grace;
    while (forwarder.in_flight() > 0 || tcp_state.open.get() > 0) && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
