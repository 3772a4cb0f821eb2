//! DNS clients for the tests: hickory-proto over UDP and TCP (sockets made
//! inside a namespace when asked), and dig/kdig.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
};

use crate::netns::Netns;

/// A UDP socket, made inside `ns` when given.
pub fn udp_socket(ns: Option<&Netns>) -> UdpSocket {
    let make = || UdpSocket::bind("0.0.0.0:0").expect("bind UDP");
    match ns {
        Some(ns) => ns.run(make),
        None => make(),
    }
}

/// A TCP connection to `server`, made inside `ns` when given.
pub fn tcp_connect(ns: Option<&Netns>, server: SocketAddr) -> std::io::Result<TcpStream> {
    let connect = move || TcpStream::connect_timeout(&server, Duration::from_secs(3));
    match ns {
        Some(ns) => ns.run(connect),
        None => connect(),
    }
}

pub fn query_message(id: u16, name: &str, rtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    m
}

/// Sends raw bytes over UDP and waits for one reply.
pub fn exchange_udp(
    socket: &UdpSocket,
    server: SocketAddr,
    wire: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    socket.send_to(wire, server)?;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 65_535];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        match socket.recv_from(&mut buf) {
            // A reply to an earlier query on this socket: not ours.
            Ok((len, _)) if len >= 2 && wire.len() >= 2 && buf[..2] != wire[..2] => continue,
            Ok((len, _)) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One query over UDP from inside `ns`; the parsed reply.
pub fn query_in(
    ns: Option<&Netns>,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> std::io::Result<Message> {
    let socket = udp_socket(ns);
    let id = rand::random();
    let wire = query_message(id, name, rtype).to_vec().unwrap();
    let reply = exchange_udp(&socket, server, &wire, timeout)?;
    let m = Message::from_vec(&reply).map_err(std::io::Error::other)?;
    if m.id() != id {
        return Err(std::io::Error::other("reply ID mismatch"));
    }
    Ok(m)
}

/// Writes one length-prefixed message on a TCP stream.
pub fn tcp_send(stream: &mut TcpStream, wire: &[u8]) -> std::io::Result<()> {
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(wire);
    stream.write_all(&framed)
}

/// Reads one length-prefixed message from a TCP stream.
pub fn tcp_recv(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// `dig` (or `kdig`) from inside `ns`; its stdout.
pub fn dig(tool: &str, ns: Option<&Netns>, server: SocketAddr, args: &[&str]) -> String {
    let mut cmd = match ns {
        Some(ns) => ns.command(tool),
        None => Command::new(tool),
    };
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(if tool == "kdig" {
            ["+time=2", "+retry=0"]
        } else {
            ["+time=2", "+tries=1"]
        })
        .args(args);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The A addresses in a `+short` output.
pub fn short_lines(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(String::from)
        .collect()
}

/// One query over TCP from inside `ns`; the parsed reply.
pub fn query_tcp_in(
    ns: Option<&Netns>,
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> std::io::Result<Message> {
    let mut stream = tcp_connect(ns, server)?;
    stream.set_read_timeout(Some(timeout))?;
    let id = rand::random();
    tcp_send(
        &mut stream,
        &query_message(id, name, RecordType::A).to_vec().unwrap(),
    )?;
    let m = Message::from_vec(&tcp_recv(&mut stream)?).map_err(std::io::Error::other)?;
    if m.id() != id {
        return Err(std::io::Error::other("reply ID mismatch"));
    }
    Ok(m)
}

/// A plain HTTP/1.1 GET from inside `ns`: (status, body).
pub fn http_get(
    ns: Option<&Netns>,
    server: SocketAddr,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = tcp_connect(ns, server)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {head}")))?;
    Ok((status, body.to_string()))
}
