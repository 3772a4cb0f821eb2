//! The benchmark lab: Spartan beside the tools an operator would pick
//! instead, on the same upstreams, queries and client, in namespaces of
//! the lab's own (never the host's network).
//!
//! ```text
//!  sb-client (dnsperf) --veth-- sb-node (system under test, 198.51.100.1) --veth-- sb-up (3 x nsd)
//!   192.0.2.1                   192.0.2.2 | 198.18.0.254                          198.18.0.1-3
//! ```
//!
//! One file per concept: [`netns`] (namespaces, links, waits), [`systems`]
//! (what is measured), [`load`] (dnsperf), [`measure`] (CPU, bpf stats,
//! system calls), [`report`] and [`chart`].

pub mod chart;
pub mod load;
pub mod measure;
pub mod netns;
pub mod report;
pub mod systems;

pub use load::{Load, RunResult, dnsperf};
pub use netns::{Lab, NODE, UP, UPSTREAMS, ns};
pub use systems::{FORWARDED, SPARTAN_PINS, System, spartan_down, terminate, with_system};
