//! A fixed set of upstream UDP sockets, whatever the load: `POOL_SIZE` per
//! address family, each bound to a random port by the kernel and replaced
//! after `ROTATE_AFTER` exchanges (no sooner than one upstream timeout
//! after it opened), so that source ports keep changing (RFC 5452 §9.2)
//! while the descriptor count stays at most twice the pool: a replaced
//! socket only drains its replies until one more timeout has passed.

use std::{cell::Cell, io, net::SocketAddr, rc::Rc, time::Duration};

use tokio::{sync::Notify, time::Instant};

use crate::udp_batch::DnsSocket;

/// Sockets per address family.
pub const POOL_SIZE: usize = 8;
/// Exchanges one socket carries before it is replaced.
pub const ROTATE_AFTER: u32 = 4096;

/// When a replaced socket stops receiving.
#[derive(Debug, Default)]
pub struct Retirement {
    at: Cell<Option<Instant>>,
    changed: Notify,
}

impl Retirement {
    fn retire_at(&self, at: Instant) {
        self.at.set(Some(at));
        self.changed.notify_one();
    }

    /// Resolves when the socket is to close.
    pub async fn wait(&self) {
        loop {
            match self.at.get() {
                None => self.changed.notified().await,
                Some(at) => return tokio::time::sleep_until(at).await,
            }
        }
    }
}

/// One socket of the pool.
pub struct Slot {
    pub id: u32,
    pub socket: Rc<DnsSocket>,
    pub retirement: Rc<Retirement>,
    sent: u32,
    opened: Instant,
}

/// Opens an unconnected UDP socket on a kernel-chosen port.
pub fn open_socket(v6: bool) -> io::Result<DnsSocket> {
    let any: SocketAddr = if v6 {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    };
    DnsSocket::new(std::net::UdpSocket::bind(any)?)
}

pub struct Pool {
    v4: Vec<Option<Slot>>,
    v6: Vec<Option<Slot>>,
    next_id: u32,
}

impl Default for Pool {
    fn default() -> Self {
        Self {
            v4: (0..POOL_SIZE).map(|_| None).collect(),
            v6: (0..POOL_SIZE).map(|_| None).collect(),
            next_id: 0,
        }
    }
}

impl Pool {
    /// The socket of slot `index` (taken modulo the pool size) for the
    /// family of `upstream`, opened or replaced as needed; `start` is
    /// called with every new slot (to run its receive loop). `timeout` is
    /// the upstream timeout: a socket lives at least that long, and a
    /// replaced one drains for that long.
    pub fn socket(
        &mut self,
        index: usize,
        upstream: &SocketAddr,
        timeout: Duration,
        start: impl FnOnce(&Slot),
    ) -> io::Result<(u32, Rc<DnsSocket>)> {
        let now = Instant::now();
        let slots = if upstream.is_ipv6() {
            &mut self.v6
        } else {
            &mut self.v4
        };
        let slot = &mut slots[index % POOL_SIZE];
        let worn = slot
            .as_ref()
            .is_some_and(|s| s.sent >= ROTATE_AFTER && now - s.opened >= timeout);
        if worn {
            let old = slot.take().expect("checked");
            old.retirement
                .retire_at(now + timeout + Duration::from_millis(100));
        }
        if slot.is_none() {
            self.next_id = self.next_id.wrapping_add(1);
            let fresh = Slot {
                id: self.next_id,
                socket: Rc::new(open_socket(upstream.is_ipv6())?),
                retirement: Rc::new(Retirement::default()),
                sent: 0,
                opened: now,
            };
            start(&fresh);
            *slot = Some(fresh);
        }
        let s = slot.as_mut().expect("filled");
        s.sent += 1;
        Ok((s.id, s.socket.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sockets_are_reused_then_rotated_and_the_old_one_retires() {
        let mut pool = Pool::default();
        let up: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let mut started = Vec::new();
        let (first, sock) = pool
            .socket(3, &up, Duration::ZERO, |s| {
                started.push(s.retirement.clone())
            })
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        for _ in 1..ROTATE_AFTER {
            let (id, s) = pool.socket(3, &up, Duration::ZERO, |_| panic!()).unwrap();
            assert_eq!((id, s.local_addr().unwrap().port()), (first, port));
        }
        let (next, _) = pool
            .socket(3, &up, Duration::ZERO, |s| {
                started.push(s.retirement.clone())
            })
            .unwrap();
        assert_ne!(next, first);
        assert_eq!(started.len(), 2);
        assert!(started[0].at.get().is_some(), "the worn socket retires");
        assert!(started[1].at.get().is_none());
    }

    #[tokio::test]
    async fn a_young_socket_is_not_rotated_however_busy() {
        let mut pool = Pool::default();
        let up: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let timeout = Duration::from_secs(60);
        let (first, _) = pool.socket(0, &up, timeout, |_| {}).unwrap();
        for _ in 0..2 * ROTATE_AFTER {
            assert_eq!(pool.socket(0, &up, timeout, |_| panic!()).unwrap().0, first);
        }
    }
}
