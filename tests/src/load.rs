//! A paced UDP load from one source address inside a namespace: every
//! query has its own ID, every reply is matched to it, and the tally says
//! what was answered, with what, and how late. Bounded in count and time.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};

use crate::{client::query_message, netns::Netns};

/// What became of the queries.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: usize,
    pub answered: usize,
    pub servfail: usize,
    pub noerror: usize,
    pub slowest: Duration,
}

impl Tally {
    pub fn lost(&self) -> usize {
        self.sent - self.answered
    }
}

/// The load: `count` queries (at most 65,536) of `rtype` for `name(i)`, at
/// `rate` per second, from `source` in `ns` to `server`; replies are
/// awaited `linger` after the last send.
pub struct Load {
    pub source: IpAddr,
    pub server: SocketAddr,
    pub count: usize,
    pub rate: u32,
    pub rtype: RecordType,
    pub linger: Duration,
}

impl Load {
    pub fn run(&self, ns: &Netns, name: impl Fn(usize) -> String) -> Tally {
        assert!(self.count <= 65_536, "IDs must stay unique");
        let source = self.source;
        let socket = ns.run(move || UdpSocket::bind((source, 0)).expect("bind load socket"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let sent_at: Arc<Mutex<Vec<Option<Instant>>>> =
            Arc::new(Mutex::new(vec![None; self.count]));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let receiver = {
            let (socket, sent_at, tally, done) = (
                socket.try_clone().unwrap(),
                sent_at.clone(),
                tally.clone(),
                done.clone(),
            );
            let server = self.server;
            std::thread::spawn(move || {
                let mut seen = vec![false; sent_at.lock().unwrap().len()];
                let mut buf = [0u8; 4096];
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok((len, from)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    if from != server || len < 12 {
                        continue;
                    }
                    let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                    if id >= seen.len() || seen[id] {
                        continue;
                    }
                    seen[id] = true;
                    let late = sent_at.lock().unwrap()[id].map(|t| t.elapsed());
                    let mut t = tally.lock().unwrap();
                    t.answered += 1;
                    match ResponseCode::from_low(buf[3] & 0x0f) {
                        ResponseCode::ServFail => t.servfail += 1,
                        ResponseCode::NoError => t.noerror += 1,
                        _ => {}
                    }
                    if let Some(late) = late {
                        t.slowest = t.slowest.max(late);
                    }
                }
            })
        };
        let start = Instant::now();
        for i in 0..self.count {
            let due = start + Duration::from_secs_f64(i as f64 / self.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let wire = query_message(i as u16, &name(i), self.rtype)
                .to_vec()
                .unwrap();
            sent_at.lock().unwrap()[i] = Some(Instant::now());
            if socket.send_to(&wire, self.server).is_ok() {
                tally.lock().unwrap().sent += 1;
            }
        }
        std::thread::sleep(self.linger);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        receiver.join().unwrap();
        tally.lock().unwrap().clone()
    }
}
