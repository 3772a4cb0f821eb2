//! Spartan: a node-local DNS resolver with an XDP fast path.

pub mod fastpath;
pub mod zone;
