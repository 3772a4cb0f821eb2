//! The DNS front end: servers that own sockets and framing, one request
//! handler that turns a query into a reply now or later, and the response
//! handle through which every reply leaves (and is counted, once).

mod handler;
mod local;
mod responder;
pub mod server;

pub use handler::RequestHandler;
pub use responder::ResponseHandle;
