//! Spartan: a node-local DNS resolver with an XDP fast path.
//!
//! - [`zone`]: the local zones, the one model behind both the daemon's and
//!   the kernel's answers;
//! - [`fastpath`]: the XDP program, its maps and their writer;
//! - [`dns`]: listeners and the query handler;
//! - [`forward`]: the racing forwarder;
//! - [`config`], [`daemon`], [`stats`].

pub mod cache;
pub mod config;
pub mod config_sources;
pub mod control;
pub mod daemon;
pub mod dns;
pub mod fastpath;
pub mod forward;
pub mod framing;
pub mod http;
pub mod iface;
pub mod inspect;
pub mod link_watch;
pub mod local_answers;
pub mod masters;
pub mod message;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod selfcheck;
pub mod state;
pub mod stats;
pub mod teardown;
pub mod udp_batch;
pub mod zone;
