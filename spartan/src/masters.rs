//! Master discovery: Exhibitor, a master-list file, or a fixed list.
//!
//! On any failure (unreachable, HTTP error, bad JSON, empty list) the last
//! good list stays in force; the failure is logged once per change of
//! state, not per poll, and counted.

use hickory_proto::{
    op::{Message, MessageType, Query},
    rr::{Name, RData, RecordType},
};
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use thiserror::Error;

/// Where the master list comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum MasterSource {
    /// No masters: empty `zk` zone, `*.mesos` gets SERVFAIL.
    None,
    /// A fixed list from the configuration.
    Static(Vec<Ipv4Addr>),
    /// A JSON array of addresses in a file, re-read when it changes.
    MasterListFile(PathBuf),
    /// Exhibitor's cluster status at this URL.
    Exhibitor(String),
}

/// How often to ask.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Intervals {
    /// After a success (default 120 s, as the original Spartan).
    pub poll: Duration,
    /// After a failure (default 5 s, as the original Spartan).
    pub retry: Duration,
    /// HTTP timeout (default 30 s, as the original Spartan).
    pub http_timeout: Duration,
    /// How often a master-list file is checked for changes.
    pub file_check: Duration,
}

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error("request failed: {0}")]
    Http(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("reply is not an Exhibitor cluster status: {0}")]
    BadJson(String),
    #[error("empty master list")]
    Empty,
    #[error("reading {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("reply larger than {0} bytes")]
    TooLarge(usize),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// The largest Exhibitor reply read; a larger one is a failure (the last
/// good list stays). A real cluster status is well under 10 KB.
pub const MAX_EXHIBITOR_BODY: usize = 1 << 20;
/// How long one name lookup through an upstream resolver may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

impl DiscoveryError {
    /// A short name of the kind of failure, for "log once per state".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Http(_) => "unreachable",
            Self::Status(_) => "http_status",
            Self::BadJson(_) => "bad_json",
            Self::Empty => "empty",
            Self::File { .. } => "file",
            Self::TooLarge(_) => "too_large",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// One member in Exhibitor's `/exhibitor/v1/cluster/status`.
#[derive(Debug, Deserialize)]
pub struct ExhibitorMember {
    pub hostname: String,
    /// 0 latent, 1 down, 2 not serving, 3 serving.
    pub code: i64,
}

/// The state of discovery, for metrics and logs.
#[derive(Debug, Default)]
pub struct MasterStatus {
    pub last_success: Mutex<Option<SystemTime>>,
    pub consecutive_failures: AtomicU64,
    pub failures_total: AtomicU64,
    pub current: Mutex<Vec<Ipv4Addr>>,
}

/// Host names of an Exhibitor reply, serving members first, each group in
/// the reply's order.
pub fn exhibitor_hosts(body: &str) -> Result<Vec<String>, DiscoveryError> {
    let members: Vec<ExhibitorMember> =
        serde_json::from_str(body).map_err(|e| DiscoveryError::BadJson(e.to_string()))?;
    let (serving, others): (Vec<_>, Vec<_>) = members.into_iter().partition(|m| m.code == 3);
    Ok(serving
        .into_iter()
        .chain(others)
        .map(|m| m.hostname.trim().to_string())
        .collect())
}

/// A master-list file's addresses.
pub fn parse_master_list(path: &Path, text: &str) -> Result<Vec<Ipv4Addr>, DiscoveryError> {
    let file_err = |message: String| DiscoveryError::File {
        path: path.to_path_buf(),
        message,
    };
    let list: Vec<String> = serde_json::from_str(text).map_err(|e| file_err(e.to_string()))?;
    let addrs = list
        .iter()
        .map(|s| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| file_err(format!("{s:?} is not an IPv4 address")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(DiscoveryError::Empty);
    }
    Ok(addrs)
}

/// Resolves host names through `resolvers` (an address stays as it is),
/// keeping order and dropping duplicates. A member whose name is invalid
/// or does not resolve is dropped, not the whole list.
async fn resolve(
    hosts: Vec<String>,
    resolvers: &[SocketAddr],
) -> Result<Vec<Ipv4Addr>, DiscoveryError> {
    let mut out: Vec<Ipv4Addr> = Vec::new();
    for host in hosts {
        let addr = match host.parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => lookup_a(&host, resolvers).await,
        };
        match addr {
            Some(a) if !out.contains(&a) => out.push(a),
            Some(_) => {}
            None => tracing::warn!(%host, "Exhibitor member dropped: no IPv4 address for it"),
        }
    }
    if out.is_empty() {
        return Err(DiscoveryError::Empty);
    }
    Ok(out)
}

/// The first A record for `host`, asked of each upstream resolver in turn
/// (never of Spartan itself, which may not be serving yet, and whose
/// `*.mesos` answers depend on the very list being discovered).
async fn lookup_a(host: &str, resolvers: &[SocketAddr]) -> Option<Ipv4Addr> {
    let mut name = Name::from_ascii(host).ok()?;
    name.set_fqdn(true);
    for resolver in resolvers {
        let id: u16 = rand::random();
        let mut query = Message::new();
        query
            .set_id(id)
            .set_message_type(MessageType::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(name.clone(), RecordType::A));
        let Ok(wire) = query.to_vec() else {
            return None;
        };
        let any: SocketAddr = if resolver.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let attempt = async {
            let socket = tokio::net::UdpSocket::bind(any).await.ok()?;
            socket.send_to(&wire, resolver).await.ok()?;
            let mut buf = vec![0u8; 4096];
            loop {
                let (len, from) = socket.recv_from(&mut buf).await.ok()?;
                let Ok(reply) = Message::from_vec(&buf[..len]) else {
                    continue;
                };
                if from != *resolver || reply.id() != id {
                    continue;
                }
                return Some(reply.answers().iter().find_map(|r| match r.data() {
                    RData::A(a) => Some(a.0),
                    _ => None,
                }));
            }
        };
        if let Ok(Some(Some(addr))) = tokio::time::timeout(LOOKUP_TIMEOUT, attempt).await {
            return Some(addr);
        }
    }
    None
}

fn http_error(e: reqwest::Error, timeout: Duration) -> DiscoveryError {
    if e.is_timeout() {
        DiscoveryError::Timeout(timeout)
    } else {
        DiscoveryError::Http(e.to_string())
    }
}

async fn fetch_exhibitor(
    client: &reqwest::Client,
    url: &str,
    resolvers: &[SocketAddr],
    timeout: Duration,
) -> Result<Vec<Ipv4Addr>, DiscoveryError> {
    let mut reply = client
        .get(url)
        .send()
        .await
        .map_err(|e| http_error(e, timeout))?;
    if !reply.status().is_success() {
        return Err(DiscoveryError::Status(reply.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = reply.chunk().await.map_err(|e| http_error(e, timeout))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_EXHIBITOR_BODY {
            return Err(DiscoveryError::TooLarge(MAX_EXHIBITOR_BODY));
        }
    }
    let text = String::from_utf8(body).map_err(|e| DiscoveryError::BadJson(e.to_string()))?;
    resolve(exhibitor_hosts(&text)?, resolvers).await
}

/// Runs discovery until the task is aborted. `apply` is called with every
/// new list (and must apply it as one step).
pub async fn follow(
    source: MasterSource,
    intervals: Intervals,
    resolvers: Vec<SocketAddr>,
    status: Arc<MasterStatus>,
    apply: impl Fn(&[Ipv4Addr]) -> anyhow::Result<()> + Send + 'static,
) {
    let client = reqwest::Client::builder()
        .timeout(intervals.http_timeout)
        .build()
        .expect("HTTP client without TLS builds");
    let mut failing: Option<&'static str> = None;
    let mut file_seen: Option<(SystemTime, u64)> = None;
    loop {
        let result = match &source {
            MasterSource::None => return,
            MasterSource::Static(list) => Ok(list.clone()),
            MasterSource::Exhibitor(url) => {
                fetch_exhibitor(&client, url, &resolvers, intervals.http_timeout).await
            }
            MasterSource::MasterListFile(path) => {
                let stamp = std::fs::metadata(path)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                if failing.is_none() && stamp.is_some() && stamp == file_seen {
                    // Unchanged since the last good read.
                    tokio::time::sleep(intervals.file_check).await;
                    continue;
                }
                file_seen = stamp;
                match std::fs::read_to_string(path) {
                    Ok(text) => parse_master_list(path, &text),
                    Err(e) => Err(DiscoveryError::File {
                        path: path.clone(),
                        message: e.to_string(),
                    }),
                }
            }
        };
        match result {
            Ok(list) => {
                let changed = *status.current.lock().expect("status lock") != list;
                if changed {
                    match apply(&list) {
                        Ok(()) => {
                            tracing::info!(masters = ?list, "master list changed");
                            *status.current.lock().expect("status lock") = list;
                        }
                        Err(e) => tracing::error!(error = %e, "applying the master list failed"),
                    }
                }
                if let Some(kind) = failing.take() {
                    tracing::info!(was = kind, "master source answers again");
                }
                *status.last_success.lock().expect("status lock") = Some(SystemTime::now());
                status.consecutive_failures.store(0, Ordering::Relaxed);
                if matches!(source, MasterSource::Static(_)) {
                    return;
                }
            }
            Err(e) => {
                status.failures_total.fetch_add(1, Ordering::Relaxed);
                status.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                if failing != Some(e.kind()) {
                    tracing::warn!(error = %e, "master source failed; keeping the last good list");
                    failing = Some(e.kind());
                }
            }
        }
        let wait = match (&source, failing) {
            // A file is only read when it changed: a fixed file is picked
            // up at the next check, failing or not.
            (MasterSource::MasterListFile(_), _) => intervals.file_check,
            (_, None) => intervals.poll,
            (_, Some(_)) => intervals.retry,
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_members_come_first() {
        let body = r#"[
            {"code": 1, "description": "down", "hostname": "10.0.0.1", "isLeader": false},
            {"code": 3, "description": "serving", "hostname": "10.0.0.2", "isLeader": true},
            {"code": 0, "description": "latent", "hostname": "10.0.0.3", "isLeader": false},
            {"code": 3, "description": "serving", "hostname": "10.0.0.4", "isLeader": false}
        ]"#;
        assert_eq!(
            exhibitor_hosts(body).unwrap(),
            vec!["10.0.0.2", "10.0.0.4", "10.0.0.1", "10.0.0.3"]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(
            exhibitor_hosts("{"),
            Err(DiscoveryError::BadJson(_))
        ));
        assert!(matches!(
            exhibitor_hosts(r#"{"a": 1}"#),
            Err(DiscoveryError::BadJson(_))
        ));
        assert!(matches!(
            exhibitor_hosts(r#"[{"code": 3}]"#),
            Err(DiscoveryError::BadJson(_))
        ));
    }

    #[test]
    fn master_list_files_parse() {
        let p = Path::new("/x");
        assert_eq!(
            parse_master_list(p, r#"["10.0.0.1", "10.0.0.2"]"#).unwrap(),
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert!(matches!(
            parse_master_list(p, "[]"),
            Err(DiscoveryError::Empty)
        ));
        assert!(parse_master_list(p, r#"["nope"]"#).is_err());
        assert!(parse_master_list(p, "garbage").is_err());
    }

    #[tokio::test]
    async fn a_bad_member_is_dropped_not_the_list() {
        // No resolver: every name fails; the addresses stay, in order.
        let hosts = vec![
            "10.0.0.9".to_string(),
            "bad host!".to_string(),
            "no-such-host.invalid".to_string(),
            "10.0.0.9".to_string(),
            "10.0.0.1".to_string(),
        ];
        let addrs = resolve(hosts, &[]).await.unwrap();
        assert_eq!(
            addrs,
            vec![Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 1)]
        );
        assert!(matches!(
            resolve(vec!["only-a-name.invalid".into()], &[]).await,
            Err(DiscoveryError::Empty)
        ));
    }
}
