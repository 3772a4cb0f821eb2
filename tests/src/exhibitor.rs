//! An Exhibitor stand-in: `GET /exhibitor/v1/cluster/status` answered in
//! Exhibitor's real format, or with the faults a real one shows (HTTP 500,
//! a connection that never answers, garbage, an empty list), switched by
//! the test. Runs on a thread inside the test's namespace; stops on drop.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

#[derive(Clone, Debug)]
pub enum Mode {
    /// Members as (hostname, code, is_leader).
    Members(Vec<(String, i64, bool)>),
    Status(u16),
    Hang,
    Garbage,
    /// A well-formed reply of over 2 MB (one serving member, repeated).
    Huge,
}

pub struct Exhibitor {
    mode: Arc<Mutex<Mode>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub requests: Arc<AtomicU64>,
    pub url: String,
}

fn body(members: &[(String, i64, bool)]) -> String {
    let items: Vec<String> = members
        .iter()
        .map(|(host, code, leader)| {
            let description = match code {
                0 => "latent",
                1 => "down",
                2 => "not serving",
                _ => "serving",
            };
            format!(
                "{{\"code\":{code},\"description\":\"{description}\",\"hostname\":\"{host}\",\"isLeader\":{leader}}}"
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn respond(mut stream: TcpStream, mode: Mode, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let (status, text) = match mode {
        Mode::Members(m) => (200, body(&m)),
        Mode::Status(code) => (code, "{\"error\":\"internal\"}".to_string()),
        Mode::Garbage => (200, "<html>not json".to_string()),
        Mode::Huge => (200, body(&vec![("10.9.9.9".to_string(), 3, false); 30_000])),
        Mode::Hang => {
            // Hold the connection, never answer (bounded by the test's life).
            for _ in 0..600 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
    };
    let reply = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

impl Exhibitor {
    pub fn start(ns: &Netns, addr: SocketAddr, mode: Mode) -> Self {
        let listener = ns.run(move || TcpListener::bind(addr).expect("bind exhibitor"));
        listener.set_nonblocking(true).unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let (m, st, rq) = (mode.clone(), stop.clone(), requests.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        rq.fetch_add(1, Ordering::Relaxed);
                        let mode = m.lock().unwrap().clone();
                        let st = st.clone();
                        std::thread::spawn(move || respond(stream, mode, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Self {
            mode,
            stop,
            handle: Some(handle),
            requests,
            url: format!("http://{addr}/exhibitor/v1/cluster/status"),
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl Drop for Exhibitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
