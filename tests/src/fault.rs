//! Small in-test DNS servers for faults no real server can be made to show
//! on demand: an instant SERVFAIL, spoofed replies. Each runs on a thread
//! with a socket made inside the test's namespace, and stops on drop.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{RData, Record, rdata::A},
};

use crate::netns::Netns;

/// What the server does with each query.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answers SERVFAIL at once.
    ServFail,
    /// Sends a forged answer (6.6.6.6) from another port, then one with a
    /// wrong ID, then the real answer (192.0.2.80) after a short delay.
    Spoof,
    /// Answers with 200 A records (about 3.2 KB) whatever UDP size the
    /// query allows: a server that ignores the client's limit.
    Oversized,
}

pub struct FaultServer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// Queries received.
    pub queries: Arc<AtomicU64>,
}

fn oversized(query: &Message) -> Vec<u8> {
    let mut m = Message::from_vec(&reply_to(query, ResponseCode::NoError, None)).unwrap();
    let name = query.queries()[0].name().clone();
    for i in 0..200u32 {
        let addr = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        m.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A(addr))));
    }
    m.to_vec().unwrap()
}

fn reply_to(query: &Message, rcode: ResponseCode, addr: Option<[u8; 4]>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(rcode);
    m.add_queries(query.queries().iter().cloned());
    if let Some(a) = addr {
        let name = query.queries()[0].name().clone();
        m.add_answer(Record::from_rdata(
            name,
            60,
            RData::A(A(std::net::Ipv4Addr::from(a))),
        ));
    }
    m.to_vec().unwrap()
}

impl FaultServer {
    pub fn start(ns: &Netns, addr: SocketAddr, fault: Fault) -> Self {
        let (socket, other) = ns.run(move || {
            (
                UdpSocket::bind(addr).expect("bind fault server"),
                UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).expect("bind spoof socket"),
            )
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let (stop2, queries2) = (stop.clone(), queries.clone());
        let handle = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop2.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                queries2.fetch_add(1, Ordering::Relaxed);
                match fault {
                    Fault::ServFail => {
                        let _ =
                            socket.send_to(&reply_to(&query, ResponseCode::ServFail, None), peer);
                    }
                    Fault::Oversized => {
                        let _ = socket.send_to(&oversized(&query), peer);
                    }
                    Fault::Spoof => {
                        let forged = reply_to(&query, ResponseCode::NoError, Some([6, 6, 6, 6]));
                        let _ = other.send_to(&forged, peer);
                        let mut wrong_id = forged.clone();
                        wrong_id[0] ^= 0xff;
                        let _ = socket.send_to(&wrong_id, peer);
                        std::thread::sleep(Duration::from_millis(30));
                        let real = reply_to(&query, ResponseCode::NoError, Some([192, 0, 2, 80]));
                        let _ = socket.send_to(&real, peer);
                    }
                }
            }
        });
        Self {
            stop,
            handle: Some(handle),
            queries,
        }
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
