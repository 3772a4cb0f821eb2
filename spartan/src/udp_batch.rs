//! The data plane's UDP sockets: batched receives, sends straight to the
//! kernel, and readiness for reading only.
//!
//! - One `recvmmsg` takes every datagram waiting on a socket (up to the
//!   batch size), and a short batch tells that the queue is empty, so no
//!   extra `recvfrom` is spent just to meet `EAGAIN`. When a batch comes
//!   back short, the closure reports `WouldBlock` and tokio clears the
//!   readiness it saw *before* the call, so a datagram that arrives
//!   meanwhile still wakes us.
//! - A [`DnsSocket`] is registered with the runtime for reading only: a UDP
//!   send either fits in the buffer at once or fails, so writability is
//!   never awaited, and a socket registered for it would wake the thread
//!   for nothing after every send (an `EPOLLOUT` edge each time the kernel
//!   frees the sent buffer).

use std::{
    io,
    mem::{MaybeUninit, size_of},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
};

use tokio::io::{Interest, unix::AsyncFd};

/// A non-blocking UDP socket whose readiness the runtime watches for
/// reading only.
pub struct DnsSocket(AsyncFd<std::net::UdpSocket>);

impl DnsSocket {
    /// Must be called inside the runtime.
    pub fn new(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        // SAFETY: the AsyncFd owns the socket, whose descriptor is open and
        // never changes until the AsyncFd (and with it the socket) is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self(fd))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    /// Sends one datagram now: it fits in the buffer at once or fails with
    /// `WouldBlock`.
    pub fn send_now(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.get_ref().send_to(data, to)
    }

    /// Sends one datagram, retrying for a while when the buffer is full
    /// (rare: a reply larger than what is free); gives up after about
    /// 100 ms.
    pub async fn send_retrying(&self, data: &[u8], to: SocketAddr) -> io::Result<usize> {
        for _ in 0..100 {
            match self.send_now(data, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await
                }
                other => return other,
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    /// Sends several datagrams (to any destinations) in one `sendmmsg`,
    /// now: how many went out (the first ones; the rest met a full buffer
    /// or an error).
    pub fn send_batch(&self, datagrams: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
        send_batch(self.0.get_ref().as_raw_fd(), datagrams)
    }
}

/// One received datagram.
pub struct Datagram<'a> {
    pub data: &'a [u8],
    pub from: SocketAddr,
    /// The datagram was larger than a slot and was cut.
    pub truncated: bool,
}

/// Buffers for up to `slots` datagrams of at most `slot_size` bytes.
pub struct RecvBatch {
    slot_size: usize,
    data: Vec<u8>,
    addrs: Vec<libc::sockaddr_storage>,
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    received: usize,
}

impl RecvBatch {
    pub fn new(slots: usize, slot_size: usize) -> Self {
        // SAFETY: these C structs are valid when zeroed.
        let zeroed_addr: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
        let zeroed_hdr: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        Self {
            slot_size,
            data: vec![0; slots * slot_size],
            addrs: vec![zeroed_addr; slots],
            headers: vec![zeroed_hdr; slots],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                slots
            ],
            received: 0,
        }
    }

    fn slots(&self) -> usize {
        self.headers.len()
    }

    /// One `recvmmsg` without blocking: how many datagrams it took.
    fn recv_now(&mut self, fd: i32) -> io::Result<usize> {
        let slots = self.slots();
        let base = self.data.as_mut_ptr();
        for i in 0..slots {
            self.iovecs[i] = libc::iovec {
                // SAFETY: slot i lies inside `data`.
                iov_base: unsafe { base.add(i * self.slot_size) }.cast(),
                iov_len: self.slot_size,
            };
            let h = &mut self.headers[i];
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_hdr.msg_iov = &mut self.iovecs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: every header points into buffers owned by self, sized as
        // declared; the kernel writes at most that much.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                slots as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Waits for at least one datagram and takes all that are waiting (up
    /// to the batch size). Read them with [`Self::get`].
    pub async fn recv(&mut self, socket: &DnsSocket) -> io::Result<usize> {
        let fd = socket.0.get_ref().as_raw_fd();
        loop {
            let mut ready = socket.0.readable().await?;
            let mut got = 0;
            let slots = self.slots();
            let result = ready.try_io(|_| {
                got = self.recv_now(fd)?;
                if got < slots {
                    // The queue is empty now: let tokio clear readiness.
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(())
                }
            });
            match result {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Ok(Err(e)) => return Err(e),
            }
            if got > 0 {
                self.received = got;
                return Ok(got);
            }
        }
    }

    /// Datagram `i` of the last batch.
    pub fn get(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.received {
            return None;
        }
        let h = &self.headers[i];
        let len = (h.msg_len as usize).min(self.slot_size);
        let start = i * self.slot_size;
        Some(Datagram {
            data: &self.data[start..start + len],
            from: socket_addr(&self.addrs[i])?,
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }
}

/// `sendmmsg` on `fd`; see [`DnsSocket::send_batch`].
fn send_batch(fd: i32, datagrams: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let addrs: Vec<socket2::SockAddr> = datagrams.iter().map(|(_, a)| (*a).into()).collect();
    let mut iovecs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|(d, _)| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(datagrams.len());
    for (addr, iov) in addrs.iter().zip(iovecs.iter_mut()) {
        // SAFETY: a zeroed mmsghdr is valid; the pointers set below outlive
        // the call.
        let mut h: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        h.msg_hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
        h.msg_hdr.msg_namelen = addr.len();
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
        headers.push(h);
    }
    // SAFETY: every header points at live buffers of the declared sizes;
    // the kernel only reads them.
    let n = unsafe {
        libc::sendmmsg(
            fd,
            headers.as_mut_ptr(),
            headers.len() as u32,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(storage as *const _ as *const _) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::UdpSocket;

    fn socket() -> DnsSocket {
        DnsSocket::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_batch_takes_every_waiting_datagram_with_its_source() {
        let rx = socket();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 3], rx.local_addr().unwrap()).unwrap();
        }
        tx.send_to(&[9; 100], rx.local_addr().unwrap()).unwrap();
        let mut batch = RecvBatch::new(8, 64);
        let mut seen = Vec::new();
        while seen.len() < 6 {
            let n = batch.recv(&rx).await.unwrap();
            for i in 0..n {
                let d = batch.get(i).unwrap();
                assert_eq!(d.from, tx.local_addr().unwrap());
                seen.push((d.data.to_vec(), d.truncated));
            }
        }
        assert_eq!(seen[0], (vec![0; 3], false));
        assert_eq!(seen[4], (vec![4; 3], false));
        assert_eq!(seen[5], (vec![9; 64], true), "cut to the slot, flagged");
    }

    #[tokio::test]
    async fn one_batch_sends_to_several_destinations() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = socket();
        let sent = tx
            .send_batch(&[
                (b"to a", a.local_addr().unwrap()),
                (b"to b", b.local_addr().unwrap()),
            ])
            .unwrap();
        assert_eq!(sent, 2);
        let mut buf = [0u8; 16];
        let (n, from) = a.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"to a"[..], tx.local_addr().unwrap()));
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"to b");
    }
}
