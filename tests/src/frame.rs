//! Crafting Ethernet/IPv4/UDP frames around DNS messages, and checking the
//! frames the XDP program sends back.

use std::net::Ipv4Addr;

use hickory_proto::{
    op::{Edns, Message},
    rr::RecordType,
    rr::rdata::opt::{EdnsCode, EdnsOption},
};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const CLIENT_PORT: u16 = 40000;

/// RFC 1071 sum of `data` as big-endian words, unfolded.
pub fn sum_words(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += word as u32;
    }
    sum
}

pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The UDP checksum for a datagram (`udp` = header + payload, checksum field
/// as given) between `src` and `dst`.
pub fn udp_sum(src: Ipv4Addr, dst: Ipv4Addr, udp: &[u8]) -> u32 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    sum_words(&pseudo) + sum_words(udp)
}

/// Shape of the IPv4/UDP wrapper of a test frame.
#[derive(Clone, Debug)]
pub struct Wrapper {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// Extra IPv4 option bytes (multiple of 4).
    pub ip_options: Vec<u8>,
    /// Flags+fragment offset field.
    pub frag: u16,
    pub protocol: u8,
    pub ethertype: u16,
    /// Ethernet destination.
    pub dst_mac: [u8; 6],
}

impl Default for Wrapper {
    fn default() -> Self {
        Self {
            src: CLIENT_IP,
            dst: SERVER_IP,
            sport: CLIENT_PORT,
            dport: 53,
            ip_options: Vec::new(),
            frag: 0x4000, // DF
            protocol: 17,
            ethertype: 0x0800,
            dst_mac: SERVER_MAC,
        }
    }
}

impl Wrapper {
    /// An Ethernet frame carrying `payload` in UDP/IPv4 with valid checksums.
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let ihl = 20 + self.ip_options.len();
        let udp_len = 8 + payload.len();
        let total = ihl + udp_len;
        let mut f = Vec::with_capacity(14 + total);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&CLIENT_MAC);
        f.extend_from_slice(&self.ethertype.to_be_bytes());
        let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&self.frag.to_be_bytes());
        ip.extend_from_slice(&[64, self.protocol, 0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let csum = !fold(sum_words(&ip));
        ip[10..12].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut udp = Vec::with_capacity(udp_len);
        udp.extend_from_slice(&self.sport.to_be_bytes());
        udp.extend_from_slice(&self.dport.to_be_bytes());
        udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(payload);
        let csum = !fold(udp_sum(self.src, self.dst, &udp));
        udp[6..8].copy_from_slice(&csum.to_be_bytes());
        f.extend_from_slice(&udp);
        f
    }
}

/// A standard query for `name`/`rtype`.
pub fn query(id: u16, name: &str, rtype: RecordType) -> Message {
    crate::client::query_message(id, name, rtype)
}

/// Adds an EDNS OPT record (version, DO bit, optional cookie option).
pub fn with_edns(mut m: Message, version: u8, dnssec_ok: bool, cookie: bool) -> Message {
    let mut edns = Edns::new();
    edns.set_max_payload(4096)
        .set_version(version)
        .set_dnssec_ok(dnssec_ok);
    if cookie {
        edns.options_mut().insert(EdnsOption::Unknown(
            u16::from(EdnsCode::Cookie),
            vec![1, 2, 3, 4, 5, 6, 7, 8],
        ));
    }
    m.set_edns(edns);
    m
}

/// A frame carrying `m` to SERVER_IP:53.
pub fn query_frame(m: &Message) -> Vec<u8> {
    Wrapper::default().frame(&m.to_vec().unwrap())
}

/// An answer frame from the program, checked at every layer: MACs, ports and
/// addresses swapped relative to `query`, lengths consistent, IPv4 and UDP
/// checksums valid. Returns the DNS payload bytes.
pub fn check_answer_frame(query: &[u8], answer: &[u8]) -> Vec<u8> {
    assert!(
        answer.len() >= 42,
        "answer frame too short: {}",
        answer.len()
    );
    assert_eq!(
        answer[0..6],
        query[6..12],
        "destination MAC is the client's"
    );
    assert_eq!(answer[6..12], query[0..6], "source MAC is ours");
    assert_eq!(answer[12..14], [0x08, 0x00]);
    let ip = &answer[14..34];
    assert_eq!(ip[0], 0x45);
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    assert_eq!(
        14 + total,
        answer.len(),
        "IP total length covers the frame exactly"
    );
    assert_eq!(fold(sum_words(ip)), 0xffff, "IPv4 header checksum");
    assert_eq!(ip[12..16], query[30..34], "source address is the one asked");
    assert_eq!(ip[16..20], query[26..30], "destination is the client");
    assert_eq!(ip[9], 17);
    let udp = &answer[34..];
    assert_eq!(udp[0..2], query[36..38], "source port is 53");
    assert_eq!(udp[2..4], query[34..36], "destination port is the client's");
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, udp.len());
    assert_ne!(udp[6..8], [0, 0], "UDP checksum present");
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    assert_eq!(fold(udp_sum(src, dst, udp)), 0xffff, "UDP checksum");
    udp[8..].to_vec()
}
