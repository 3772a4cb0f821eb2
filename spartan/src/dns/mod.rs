//! The DNS front end: listeners and the query handler.

mod handler;
mod local;
pub mod server;

pub use handler::{Decision, Handler, Transport};

/// A real SERVFAIL for `query`: QR set, its ID and question, RA set.
pub fn servfail(query: &hickory_proto::op::Message) -> Vec<u8> {
    let reply = local::response_to(query, hickory_proto::op::ResponseCode::ServFail);
    reply.to_vec().unwrap_or_default()
}
