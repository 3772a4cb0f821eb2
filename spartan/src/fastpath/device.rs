//! Which XDP mode an interface gets, from what kind of device it is.
//!
//! Measured on kernel 6.18: XDP_TX in native mode on the host side of a
//! veth pair delivers the answer only when the peer (the container's end)
//! runs NAPI, i.e. has an XDP program or GRO on; a real container has
//! neither, so the answer is lost. In generic (skb) mode the same program
//! on the same veth answers correctly. Bridges and `lo` have generic mode
//! only. A physical NIC gets native mode where its driver has it.

use std::{io, mem::size_of};

/// `struct ethtool_drvinfo` (linux/ethtool.h).
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

const ETHTOOL_GDRVINFO: u32 = 0x0000_0003;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// What the XDP program must know of an interface it is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub ifindex: u32,
    /// Hardware address (zero on `lo`).
    pub mac: [u8; 6],
    pub loopback: bool,
}

/// `interface`'s index, hardware address and loopback flag, asked in the
/// caller's network namespace.
pub fn identity(interface: &str) -> io::Result<Identity> {
    let name = interface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: zeroed C structs are valid; each ioctl fills the ifreq it is
    // given; the socket is closed below.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (slot, byte) in req.ifr_name.iter_mut().zip(name) {
            *slot = *byte as libc::c_char;
        }
        let result = (|| {
            if libc::ioctl(fd, libc::SIOCGIFINDEX, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            let ifindex = req.ifr_ifru.ifru_ifindex as u32;
            if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            let loopback = req.ifr_ifru.ifru_flags as libc::c_int & libc::IFF_LOOPBACK != 0;
            if libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            let data = req.ifr_ifru.ifru_hwaddr.sa_data;
            let mut mac = [0u8; 6];
            for (m, d) in mac.iter_mut().zip(data) {
                *m = d as u8;
            }
            Ok(Identity {
                ifindex,
                mac,
                loopback,
            })
        })();
        libc::close(fd);
        result
    }
}

/// The driver behind `interface` ("veth", "bridge", "virtio_net", ...), as
/// `ethtool -i` shows it, asked in the caller's network namespace.
pub fn driver(interface: &str) -> io::Result<String> {
    let name = interface.as_bytes();
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: zeroed C structs are valid; the ioctl writes at most the
    // size of the drvinfo struct it is given; the socket is closed below.
    unsafe {
        let mut info: EthtoolDrvinfo = std::mem::zeroed();
        info.cmd = ETHTOOL_GDRVINFO;
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(name) {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let ret = libc::ioctl(fd, SIOCETHTOOL, &mut req as *mut libc::ifreq);
        let err = io::Error::last_os_error();
        libc::close(fd);
        if ret < 0 {
            return Err(err);
        }
        let _ = size_of::<EthtoolDrvinfo>();
        let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
        Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
    }
}

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Generic (skb) mode only.
    Generic,
    /// Native mode, generic where the driver has none.
    NativeFirst,
}

/// The mode for `interface`: generic for `lo` and veths (see above),
/// native first for the rest.
pub fn policy(interface: &str) -> Policy {
    if interface == "lo" {
        return Policy::Generic;
    }
    match driver(interface).as_deref() {
        Ok("veth") => Policy::Generic,
        _ => Policy::NativeFirst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_generic_and_an_unknown_interface_has_no_driver() {
        assert_eq!(policy("lo"), Policy::Generic);
        assert!(driver("no-such-if0").is_err());
        assert!(driver(&"x".repeat(20)).is_err());
    }
}
