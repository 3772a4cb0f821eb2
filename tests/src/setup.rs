//! What most end-to-end tests start from: a node namespace with Spartan's
//! address, the address to ask, a configuration file that goes away with
//! the test, and a question that must be answered.

use std::{
    net::SocketAddr,
    ops::Deref,
    path::{Path, PathBuf},
    time::Duration,
};

use hickory_proto::{op::Message, rr::RecordType};

use crate::{client::query_in, netns::Netns, require_root};

/// Spartan's first listen address in the tests.
pub const SPARTAN_ADDR: &str = "198.51.100.1";

/// Spartan's DNS address in a node namespace.
pub fn server() -> SocketAddr {
    SocketAddr::new(SPARTAN_ADDR.parse().expect("an address"), 53)
}

/// A node namespace (named from `prefix`) with Spartan's address on `lo`.
pub fn spartan_node(prefix: &str) -> Netns {
    require_root();
    let node = Netns::new(prefix);
    node.ip(&["addr", "add", &format!("{SPARTAN_ADDR}/32"), "dev", "lo"]);
    node
}

/// Asks Spartan in `node` over UDP; the answer, or a panic naming the
/// question.
pub fn ask(node: &Netns, name: &str, rtype: RecordType) -> Message {
    query_in(Some(node), server(), name, rtype, Duration::from_secs(6))
        .unwrap_or_else(|e| panic!("no answer for {name} {rtype}: {e}"))
}

/// A configuration file in a directory of its own, removed with the value.
pub struct TempConfig {
    dir: PathBuf,
    path: PathBuf,
}

impl TempConfig {
    pub fn new(text: &str) -> Self {
        let dir = std::env::temp_dir().join(crate::netns::unique("cfg"));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("spartan.toml");
        std::fs::write(&path, text).expect("writing the configuration");
        Self { dir, path }
    }
}

impl Deref for TempConfig {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempConfig {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
