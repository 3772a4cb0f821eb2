//! UDP and TCP listeners on every listen address.
//!
//! Work is bounded: at most `max_in_flight` queries are being answered at
//! once (UDP queries beyond that are dropped and counted; a TCP connection
//! waits for a slot), and at most `max_tcp_connections` connections are open
//! (more are refused).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{Semaphore, mpsc},
    task::JoinSet,
};

use super::{Decision, Handler, Transport};
use crate::stats::Stats;

/// Limits of the front end.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_in_flight: usize,
    pub max_tcp_connections: usize,
    pub tcp_idle_timeout: Duration,
}

/// The running listeners.
pub struct Server {
    tasks: JoinSet<()>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    pub udp_addrs: Vec<SocketAddr>,
    pub tcp_addrs: Vec<SocketAddr>,
}

impl Server {
    /// Binds UDP and TCP on every address and starts serving.
    pub async fn start(
        addrs: &[SocketAddr],
        handler: Arc<Handler>,
        limits: Limits,
        in_flight: Arc<Semaphore>,
    ) -> Result<Self> {
        let connections = Arc::new(Semaphore::new(limits.max_tcp_connections));
        let mut tasks = JoinSet::new();
        let mut udp_addrs = Vec::new();
        let mut tcp_addrs = Vec::new();
        for addr in addrs {
            let udp = UdpSocket::bind(addr).await.with_context(|| {
                format!("binding UDP {addr} (is the address configured on this host?)")
            })?;
            udp_addrs.push(udp.local_addr()?);
            // TCP on the same port as UDP, also when UDP's was picked by the kernel.
            let tcp_addr = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
            let tcp = TcpListener::bind(tcp_addr)
                .await
                .with_context(|| format!("binding TCP {tcp_addr}"))?;
            tcp_addrs.push(tcp.local_addr()?);
            tasks.spawn(serve_udp(Arc::new(udp), handler.clone(), in_flight.clone()));
            tasks.spawn(serve_tcp(
                tcp,
                handler.clone(),
                in_flight.clone(),
                connections.clone(),
                limits.tcp_idle_timeout,
            ));
        }
        Ok(Self {
            tasks,
            in_flight,
            max_in_flight: limits.max_in_flight,
            udp_addrs,
            tcp_addrs,
        })
    }

    /// Stops accepting, then waits (at most `grace`) for in-flight queries.
    pub async fn shutdown(mut self, grace: Duration) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let all = self.max_in_flight as u32;
        let _ = tokio::time::timeout(grace, self.in_flight.acquire_many(all)).await;
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, handler: Arc<Handler>, in_flight: Arc<Semaphore>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; keep serving.
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        // Local answers and errors go out at once and hold nothing: they
        // are never dropped for overload, so `ready.spartan` keeps working
        // under a flood of forwarded names.
        let query = match handler.decide(&buf[..len], Transport::Udp) {
            Decision::Reply(reply) => {
                // A full send buffer must not lose the reply: finish the
                // send in a task rather than stall this loop.
                // Such sends hold an in-flight slot, so that they stay bounded.
                if let Err(e) = socket.try_send_to(&reply, peer)
                    && e.kind() == std::io::ErrorKind::WouldBlock
                {
                    match in_flight.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let socket = socket.clone();
                            tokio::spawn(async move {
                                let _ = socket.send_to(&reply, peer).await;
                                drop(permit);
                            });
                        }
                        Err(_) => Stats::inc(&handler.stats().dropped_overload),
                    }
                }
                continue;
            }
            Decision::Drop => continue,
            Decision::Forward(query) => query,
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            Stats::inc(&handler.stats().dropped_overload);
            handler.forwarding(Transport::Udp, false);
            continue;
        };
        handler.forwarding(Transport::Udp, true);
        let wire = buf[..len].to_vec();
        let socket = socket.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let reply = handler.forward(&query, &wire, Transport::Udp).await;
            let _ = socket.send_to(&reply, peer).await;
            drop(permit);
        });
    }
}

async fn serve_tcp(
    listener: TcpListener,
    handler: Arc<Handler>,
    in_flight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    idle: Duration,
) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            Stats::inc(&handler.stats().tcp_refused);
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            serve_connection(stream, handler, in_flight, idle).await;
            drop(slot);
        });
    }
}

/// One TCP connection: queries are read as they come (pipelining) and each
/// is answered as soon as it is ready, possibly out of order. The
/// connection closes after `idle` without a query while none is pending.
async fn serve_connection(
    stream: TcpStream,
    handler: Arc<Handler>,
    in_flight: Arc<Semaphore>,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let write_task = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            framed.extend_from_slice(&reply);
            if writer.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let pending = Arc::new(AtomicUsize::new(0));
    loop {
        let len = match tokio::time::timeout(idle, reader.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            // Idle: close unless a reply is still being worked on.
            Err(_) if pending.load(Ordering::Acquire) == 0 => break,
            Err(_) => continue,
            Ok(Err(_)) => break,
        };
        let mut query = vec![0u8; len];
        match tokio::time::timeout(idle, reader.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        let tx = tx.clone();
        let pending = pending.clone();
        pending.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(async move {
            if let Some(reply) = handler.handle(&query, Transport::Tcp).await {
                let _ = tx.send(reply).await;
            }
            pending.fetch_sub(1, Ordering::AcqRel);
            drop(permit);
        });
    }
    drop(tx);
    // Pending replies are still written before the connection closes.
    let _ = write_task.await;
}
