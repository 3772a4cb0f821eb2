//! A UDP listener: batched receives, every datagram to the handler.

use std::{cell::Cell, rc::Rc};

use crate::{
    dns::{RequestHandler, ResponseHandle, responder::Target},
    message::Transport,
    stats::DropReason,
    udp_batch::{DnsSocket, RecvBatch},
};

/// Datagrams one receive call takes, and the largest query taken (a larger
/// one is cut by the kernel, flagged, and dropped as garbage).
const QUERY_BATCH: usize = 32;
const QUERY_SLOT: usize = 4096;

pub async fn serve(socket: Rc<DnsSocket>, handler: Rc<RequestHandler>) {
    let deferred = Rc::new(Cell::new(0));
    let mut batch = RecvBatch::new(QUERY_BATCH, QUERY_SLOT);
    loop {
        let n = match batch.recv(&socket).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive error");
                continue;
            }
        };
        for i in 0..n {
            let Some(d) = batch.get(i) else { continue };
            if d.truncated {
                handler.stats().dropped(DropReason::Garbage);
                continue;
            }
            let target = Target::Udp {
                socket: socket.clone(),
                peer: d.from,
                deferred: deferred.clone(),
            };
            let response = ResponseHandle::new(target, handler.stats().clone());
            handler.handle(d.data, Transport::Udp, d.from.ip(), response);
        }
    }
}
