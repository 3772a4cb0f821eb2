//! TCP listeners and connections. A client costs at most its own
//! connection: each connection has a cap on queries being answered and on
//! reply bytes queued for it, stops reading while over either (the TCP
//! window pushes back), closes when the client does not read its replies
//! for the write timeout, and holds no forwarding budget while it waits on
//! the client's socket (a reply that is ready is queued here, and the
//! forwarder's budget is already given back).

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    net::SocketAddr,
    rc::Rc,
    time::Duration,
};

use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Notify,
    time::Instant,
};

use crate::{
    dns::{RequestHandler, ResponseHandle, responder::Target},
    framing::{FrameReader, frame},
    message::Transport,
    stats::Stats,
};

/// Queries of one connection being answered or queued, at most.
pub const MAX_PENDING_PER_CONNECTION: usize = 64;
/// Reply bytes queued for one connection before it stops reading.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024;
/// How long an accept loop pauses when no descriptor is left.
const EMFILE_PAUSE: Duration = Duration::from_millis(100);

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    pub max_connections: usize,
    /// Closes a connection without a query (and nothing pending) for this
    /// long, and one whose client reads nothing for this long.
    pub idle_timeout: Duration,
}

/// What the TCP side shares across its connections.
#[derive(Default)]
pub struct TcpState {
    /// Connections open now.
    pub open: Cell<usize>,
    /// Shutting down: connections read no new query, finish what they
    /// hold, and close.
    pub stopping: Cell<bool>,
    pub stop: Notify,
}

impl TcpState {
    pub fn begin_stop(&self) {
        self.stopping.set(true);
        self.stop.notify_waiters();
    }
}

/// What a connection's replies wait in.
#[derive(Default)]
pub struct Connection {
    queue: RefCell<VecDeque<Vec<u8>>>,
    queued_bytes: Cell<usize>,
    /// Queries handed to the handler and not yet answered.
    pending: Cell<usize>,
    closed: Cell<bool>,
    wake: Notify,
}

impl Connection {
    /// Queues a reply (framed) and wakes the connection.
    pub fn push_reply(&self, reply: Vec<u8>) {
        self.pending.set(self.pending.get() - 1);
        if !self.closed.get() {
            let framed = frame(&reply);
            self.queued_bytes
                .set(self.queued_bytes.get() + framed.len());
            self.queue.borrow_mut().push_back(framed);
        }
        self.wake.notify_one();
    }

    /// A query that gets no reply.
    pub fn forget_query(&self) {
        self.pending.set(self.pending.get() - 1);
        self.wake.notify_one();
    }

    fn has_room(&self) -> bool {
        self.pending.get() + self.queue.borrow().len() < MAX_PENDING_PER_CONNECTION
            && self.queued_bytes.get() < MAX_QUEUED_BYTES
    }
}

pub async fn serve(
    listener: TcpListener,
    handler: Rc<RequestHandler>,
    limits: TcpLimits,
    state: Rc<TcpState>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    // Spinning would not free a descriptor; pausing lets
                    // other work finish and close some.
                    Stats::inc(&handler.stats().accept_backoffs);
                    tokio::time::sleep(EMFILE_PAUSE).await;
                }
                continue;
            }
        };
        if state.open.get() >= limits.max_connections {
            Stats::inc(&handler.stats().tcp_refused);
            continue;
        }
        state.open.set(state.open.get() + 1);
        let handler = handler.clone();
        let state = state.clone();
        tokio::task::spawn_local(async move {
            serve_connection(stream, peer, handler, limits.idle_timeout, &state).await;
            state.open.set(state.open.get() - 1);
        });
    }
}

/// One connection: queries are read as they come (pipelining) and each is
/// answered as soon as it is ready, possibly out of order.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Rc<RequestHandler>,
    idle: Duration,
    state: &TcpState,
) {
    let _ = stream.set_nodelay(true);
    let conn = Rc::new(Connection::default());
    let (mut reader, mut writer) = stream.split();
    let mut frames = FrameReader::new();
    let mut client_done = false;
    // The reply being written and how much of it went out.
    let mut out: Vec<u8> = Vec::new();
    let mut written = 0;
    let mut last_progress = Instant::now();
    loop {
        while conn.has_room() {
            let Some(query) = frames.next_buffered() else {
                break;
            };
            conn.pending.set(conn.pending.get() + 1);
            let response = ResponseHandle::new(Target::Tcp(conn.clone()), handler.stats().clone());
            handler.handle(&query, Transport::Tcp, peer.ip(), response);
        }
        if written == out.len()
            && let Some(next) = conn.queue.borrow_mut().pop_front()
        {
            conn.queued_bytes.set(conn.queued_bytes.get() - next.len());
            out = next;
            written = 0;
        }
        let writing = written < out.len();
        // Done: the client closed, or the server stops, and nothing is owed.
        if (client_done || state.stopping.get()) && !writing && conn.pending.get() == 0 {
            break;
        }
        let can_read = !client_done && !state.stopping.get() && conn.has_room();
        tokio::select! {
            read = frames.fill(&mut reader), if can_read => match read {
                Ok(0) | Err(_) => client_done = true,
                Ok(_) => last_progress = Instant::now(),
            },
            sent = writer.write(&out[written..]), if writing => match sent {
                Ok(n) if n > 0 => {
                    written += n;
                    last_progress = Instant::now();
                }
                _ => break,
            },
            _ = conn.wake.notified(), if !writing => {}
            _ = state.stop.notified(), if !state.stopping.get() => {}
            _ = tokio::time::sleep_until(last_progress + idle) => {
                if writing {
                    // The client sends but does not read: it goes.
                    Stats::inc(&handler.stats().tcp_write_timeouts);
                    break;
                }
                if conn.pending.get() == 0 {
                    break;
                }
                // Answers still coming from upstream keep it open.
                last_progress = Instant::now();
            }
        }
    }
    conn.closed.set(true);
    conn.queue.borrow_mut().clear();
    let _ = writer.shutdown().await;
}
