//! Helpers for Spartan's end-to-end tests.
//!
//! Tests that need root (BPF, network namespaces) are named `root_*`.
//! `cargo xtask test` filters them out, and says so, when not run as root;
//! run by hand without root they fail with a message instead of passing.

pub mod frame;
pub mod pins;
pub mod setup;
pub mod zk;

/// Command-line arguments as owned strings.
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Raises this test process's own soft descriptor limit (a test client that
/// opens many connections; the daemon keeps the limit it is given).
pub fn raise_own_fd_limit(want: u64) {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = want.min(l.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

/// Panics with a clear message unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test needs root (BPF and network namespaces); run it as root or via `cargo xtask test`"
        );
    }
}
pub mod client;
pub mod daemon;
pub mod exhibitor;
pub mod fault;
pub mod load;
pub mod metrics;
pub mod netns;
pub mod nsd;

/// A client namespace joined to a node namespace by a veth pair
/// (client 192.0.2.1, node 192.0.2.2), the client routing 198.51.100.0/24
/// through the node: a container as it really is, with nothing attached or
/// installed on its side. Everything goes with the values.
pub struct ClientNode {
    pub link: netns::Link,
    pub client: netns::Netns,
    pub node: netns::Netns,
}

impl ClientNode {
    pub fn new(client_prefix: &str, node_prefix: &str) -> Self {
        require_root();
        let node = netns::Netns::new(node_prefix);
        let client = netns::Netns::new(client_prefix);
        let link = netns::veth(&client, "192.0.2.1/24", &node, "192.0.2.2/24");
        client.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
        Self { link, client, node }
    }
}

/// Containers on a Linux bridge in the node namespace (docker0-style): the
/// bridge holds 192.0.2.2/24, container `i` has 192.0.2.(11+i) on a plain
/// veth whose host end is a bridge port, and routes 198.51.100.0/24 through
/// the bridge. Nothing is attached or installed in the containers.
pub struct BridgedNode {
    pub bridge: String,
    pub containers: Vec<netns::Netns>,
    pub node: netns::Netns,
}

impl BridgedNode {
    pub fn new(node_prefix: &str, containers: usize) -> Self {
        require_root();
        let node = netns::Netns::new(node_prefix);
        let bridge = netns::unique("br");
        node.ip(&["link", "add", &bridge, "type", "bridge"]);
        node.ip(&["addr", "add", "192.0.2.2/24", "dev", &bridge]);
        node.ip(&["link", "set", &bridge, "up"]);
        let containers = (0..containers)
            .map(|i| {
                let c = netns::Netns::new("ctr");
                let link = netns::veth_port(&c, &format!("192.0.2.{}/24", 11 + i), &node, &bridge);
                let _ = link;
                c.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
                c
            })
            .collect();
        Self {
            bridge,
            containers,
            node,
        }
    }
}
