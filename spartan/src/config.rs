//! Configuration: a TOML file (every key optional), environment variables
//! for the keys DC/OS operators set, and command-line flags over both.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::masters::{Intervals, MasterSource};

pub const DEFAULT_MASTER_LIST: &str = "/opt/mesosphere/etc/master_list";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:62080";

/// Spartan's default listen addresses (RFC 5737 TEST-NET-2, as DC/OS).
pub const DEFAULT_LISTEN: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
    Ipv4Addr::new(198, 51, 100, 3),
];

pub const DEFAULT_CONFIG_PATH: &str = "/etc/spartan/spartan.toml";

/// A configuration error, naming the key at fault.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The file as written: every key optional.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// IPv4 addresses Spartan answers on.
    pub listen_addresses: Option<Vec<String>>,
    /// DNS port on those addresses.
    pub dns_port: Option<u16>,
    /// Upstream resolvers, `"ip"` or `"ip:port"`.
    pub upstream_resolvers: Option<Vec<String>>,
    /// Zone name -> servers (`"ip"` or `"ip:port"`).
    pub forward_zones: Option<BTreeMap<String, Vec<String>>>,
    /// Port of Mesos-DNS on the masters.
    pub mesos_port: Option<u16>,
    pub upstream_timeout_ms: Option<u64>,
    pub query_deadline_ms: Option<u64>,
    /// Forwarded queries awaiting an answer, in all.
    pub max_in_flight: Option<usize>,
    /// ... of which one client (source address) may hold (default: a
    /// quarter of `max_in_flight`).
    pub max_in_flight_per_client: Option<usize>,
    /// Outstanding exchanges one upstream may hold (default: half of
    /// `max_in_flight`), so that a dead zone cannot take the whole budget.
    pub max_in_flight_per_upstream: Option<usize>,
    pub max_tcp_connections: Option<usize>,
    pub tcp_idle_timeout_ms: Option<u64>,
    /// How often the daemon checks itself (ready.spartan over UDP and TCP).
    pub self_check_interval_ms: Option<u64>,
    /// Create the `spartan` device (or put the addresses on `lo`).
    pub manage_interface: Option<bool>,
    pub masters: Option<MastersFile>,
    pub xdp: Option<XdpFile>,
    pub http: Option<HttpFile>,
    pub cache: Option<CacheFile>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MastersFile {
    /// `exhibitor` | `exhibitor_uri` | `master_list` | `static`.
    pub source: Option<String>,
    /// Exhibitor host (`http://HOST:8181/exhibitor/v1/cluster/status`).
    pub exhibitor_address: Option<String>,
    /// Exhibitor's full cluster-status URL.
    pub exhibitor_uri: Option<String>,
    /// JSON array of master addresses.
    pub master_list_file: Option<String>,
    #[serde(rename = "static")]
    pub static_list: Option<Vec<String>>,
    pub poll_interval_ms: Option<u64>,
    pub retry_interval_ms: Option<u64>,
    pub http_timeout_ms: Option<u64>,
    pub file_check_interval_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpFile {
    /// Address of the HTTP API and metrics.
    pub listen: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdpFile {
    /// Answer in the kernel at all.
    pub enabled: Option<bool>,
    /// Interfaces besides `lo` (container-facing veths and bridges).
    pub interfaces: Option<Vec<String>>,
    /// Where maps and links are pinned.
    pub pin_dir: Option<String>,
    /// Detach the program on exit instead of leaving it pinned for the next
    /// daemon.
    pub detach_on_exit: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheFile {
    /// Cache forwarded answers at all (`false`: every query goes upstream).
    pub enabled: Option<bool>,
    /// Entries kept at most.
    pub max_entries: Option<usize>,
    /// Bytes of answers kept at most.
    pub max_bytes: Option<usize>,
    /// Longest TTL a cached answer keeps.
    pub max_ttl_s: Option<u32>,
    /// ... for `*.mesos` (Mesos-DNS records move with tasks).
    pub mesos_max_ttl_s: Option<u32>,
    /// Longest TTL of a negative answer (NXDOMAIN, NODATA).
    pub negative_ttl_s: Option<u32>,
    /// How long past its expiry an answer may still be served when every
    /// upstream fails (RFC 8767); 0 turns serve-stale off.
    pub stale_max_s: Option<u32>,
    /// How long a query for an expired answer waits for the upstreams
    /// before it gets the stale answer (RFC 8767's client response timer).
    pub stale_answer_after_ms: Option<u64>,
}

/// The answer cache's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CacheConfig {
    pub enabled: bool,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub max_ttl_s: u32,
    pub mesos_max_ttl_s: u32,
    pub negative_ttl_s: u32,
    pub stale_max_s: u32,
    pub stale_answer_after_ms: u64,
}

impl CacheConfig {
    fn from_file(file: &CacheFile) -> Result<Self, ConfigError> {
        let c = Self {
            enabled: file.enabled.unwrap_or(true),
            max_entries: file
                .max_entries
                .unwrap_or(spartan_common::KERNEL_MIRROR_MAX),
            max_bytes: file.max_bytes.unwrap_or(32 << 20),
            max_ttl_s: file.max_ttl_s.unwrap_or(60),
            mesos_max_ttl_s: file.mesos_max_ttl_s.unwrap_or(5),
            negative_ttl_s: file.negative_ttl_s.unwrap_or(5),
            stale_max_s: file.stale_max_s.unwrap_or(86_400),
            stale_answer_after_ms: file.stale_answer_after_ms.unwrap_or(500),
        };
        if c.enabled && c.max_entries == 0 {
            return Err(invalid(
                "cache.max_entries",
                "must be at least 1 (use cache.enabled = false to turn the cache off)",
            ));
        }
        if c.enabled && c.max_bytes < 4096 {
            return Err(invalid("cache.max_bytes", "must be at least 4096"));
        }
        Ok(c)
    }

    fn to_file(&self) -> CacheFile {
        CacheFile {
            enabled: Some(self.enabled),
            max_entries: Some(self.max_entries),
            max_bytes: Some(self.max_bytes),
            max_ttl_s: Some(self.max_ttl_s),
            mesos_max_ttl_s: Some(self.mesos_max_ttl_s),
            negative_ttl_s: Some(self.negative_ttl_s),
            stale_max_s: Some(self.stale_max_s),
            stale_answer_after_ms: Some(self.stale_answer_after_ms),
        }
    }
}

/// The effective configuration, validated.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub listen_addresses: Vec<Ipv4Addr>,
    pub dns_port: u16,
    pub upstream_resolvers: Vec<SocketAddr>,
    pub forward_zones: BTreeMap<String, Vec<SocketAddr>>,
    pub mesos_port: u16,
    #[serde(serialize_with = "ser_ms")]
    pub upstream_timeout: Duration,
    #[serde(serialize_with = "ser_ms")]
    pub query_deadline: Duration,
    pub max_in_flight: usize,
    pub max_in_flight_per_client: usize,
    pub max_in_flight_per_upstream: usize,
    pub max_tcp_connections: usize,
    #[serde(serialize_with = "ser_ms")]
    pub tcp_idle_timeout: Duration,
    #[serde(serialize_with = "ser_ms")]
    pub self_check_interval: Duration,
    pub manage_interface: bool,
    pub masters: MasterSource,
    pub master_intervals: Intervals,
    pub xdp: XdpConfig,
    pub http_listen: SocketAddr,
    pub cache: CacheConfig,
}

#[derive(Clone, Debug, Serialize)]
pub struct XdpConfig {
    pub enabled: bool,
    pub interfaces: Vec<String>,
    pub pin_dir: PathBuf,
    pub detach_on_exit: bool,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_millis()))
}

/// Parses `"ip"` or `"ip:port"` (default port `default_port`).
pub fn parse_server(key: &str, s: &str, default_port: u16) -> Result<SocketAddr, ConfigError> {
    let s = s.trim();
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok(sa);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| {
            invalid(
                key,
                format!("{s:?} is not an address (\"ip\" or \"ip:port\")"),
            )
        })
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// The file that gives `config` back: every key written out, so that
    /// `check-config`'s output, fed back in, yields the same configuration.
    pub fn from_config(config: &Config) -> Self {
        let ms = |d: Duration| Some(d.as_millis() as u64);
        let servers = |list: &[SocketAddr]| list.iter().map(|s| s.to_string()).collect();
        let mut masters = MastersFile {
            poll_interval_ms: ms(config.master_intervals.poll),
            retry_interval_ms: ms(config.master_intervals.retry),
            http_timeout_ms: ms(config.master_intervals.http_timeout),
            file_check_interval_ms: ms(config.master_intervals.file_check),
            ..Default::default()
        };
        match &config.masters {
            MasterSource::None => {}
            MasterSource::Static(list) => {
                masters.source = Some("static".into());
                masters.static_list = Some(list.iter().map(|a| a.to_string()).collect());
            }
            MasterSource::MasterListFile(path) => {
                masters.source = Some("master_list".into());
                masters.master_list_file = Some(path.display().to_string());
            }
            MasterSource::Exhibitor(url) => {
                masters.source = Some("exhibitor_uri".into());
                masters.exhibitor_uri = Some(url.clone());
            }
        }
        Self {
            listen_addresses: Some(
                config
                    .listen_addresses
                    .iter()
                    .map(|a| a.to_string())
                    .collect(),
            ),
            dns_port: Some(config.dns_port),
            upstream_resolvers: Some(servers(&config.upstream_resolvers)),
            forward_zones: Some(
                config
                    .forward_zones
                    .iter()
                    .map(|(z, list)| (z.clone(), servers(list)))
                    .collect(),
            ),
            mesos_port: Some(config.mesos_port),
            upstream_timeout_ms: ms(config.upstream_timeout),
            query_deadline_ms: ms(config.query_deadline),
            max_in_flight: Some(config.max_in_flight),
            max_in_flight_per_client: Some(config.max_in_flight_per_client),
            max_in_flight_per_upstream: Some(config.max_in_flight_per_upstream),
            max_tcp_connections: Some(config.max_tcp_connections),
            tcp_idle_timeout_ms: ms(config.tcp_idle_timeout),
            self_check_interval_ms: ms(config.self_check_interval),
            manage_interface: Some(config.manage_interface),
            masters: Some(masters),
            xdp: Some(XdpFile {
                enabled: Some(config.xdp.enabled),
                interfaces: Some(config.xdp.interfaces.clone()),
                pin_dir: Some(config.xdp.pin_dir.display().to_string()),
                detach_on_exit: Some(config.xdp.detach_on_exit),
            }),
            http: Some(HttpFile {
                listen: Some(config.http_listen.to_string()),
            }),
            cache: Some(config.cache.to_file()),
        }
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Validates and fills in defaults. `resolv_conf` is the text of
    /// /etc/resolv.conf, used when no upstream resolvers are configured.
    /// The daemon needs at least one usable upstream resolver.
    pub fn resolve(&self, resolv_conf: &str) -> Result<Config, ConfigError> {
        let config = self.resolve_without_upstreams(resolv_conf)?;
        if config.upstream_resolvers.is_empty() {
            return Err(invalid(
                "upstream_resolvers",
                "no usable upstream resolver: none is configured and /etc/resolv.conf lists \
                 only Spartan's own addresses (genresolv writes them there); set \
                 upstream_resolvers in the file or RESOLVERS in the environment",
            ));
        }
        Ok(config)
    }

    /// [`Self::resolve`] for the node tools (watchdog, genresolv, stats,
    /// down), which need addresses, ports and paths but no upstream.
    pub fn resolve_without_upstreams(&self, resolv_conf: &str) -> Result<Config, ConfigError> {
        let listen_addresses = self.listen_addresses()?;
        let dns_port = self.dns_port.unwrap_or(53);
        if dns_port == 0 {
            return Err(invalid("dns_port", "must be a port (1-65535)"));
        }
        let ours = |sa: &SocketAddr| match sa.ip() {
            IpAddr::V4(v4) => listen_addresses.contains(&v4) || DEFAULT_LISTEN.contains(&v4),
            IpAddr::V6(_) => false,
        };
        let upstream_resolvers = match self.configured_resolvers()? {
            Some(list) => {
                if let Some(sa) = list.iter().find(|sa| ours(sa)) {
                    return Err(invalid(
                        "upstream_resolvers",
                        format!(
                            "{sa} is one of Spartan's own listen addresses: Spartan would query itself in a loop"
                        ),
                    ));
                }
                list
            }
            None => resolv_conf_nameservers(resolv_conf)
                .into_iter()
                .filter(|sa| !ours(sa))
                .collect(),
        };
        let upstream_timeout = millis("upstream_timeout_ms", self.upstream_timeout_ms, 2000)?;
        let query_deadline = millis("query_deadline_ms", self.query_deadline_ms, 5000)?;
        if query_deadline < upstream_timeout {
            return Err(invalid(
                "query_deadline_ms",
                "must not be less than upstream_timeout_ms",
            ));
        }
        let budget = self.budget()?;
        let (masters, master_intervals) = self.masters()?;
        Ok(Config {
            forward_zones: self.forward_zones(&ours)?,
            listen_addresses,
            dns_port,
            upstream_resolvers,
            mesos_port: self.mesos_port.unwrap_or(61053),
            upstream_timeout,
            query_deadline,
            max_in_flight: budget.max_in_flight,
            max_in_flight_per_client: budget.per_client,
            max_in_flight_per_upstream: budget.per_upstream,
            max_tcp_connections: budget.tcp_connections,
            tcp_idle_timeout: millis("tcp_idle_timeout_ms", self.tcp_idle_timeout_ms, 10_000)?,
            self_check_interval: millis(
                "self_check_interval_ms",
                self.self_check_interval_ms,
                5_000,
            )?,
            manage_interface: self.manage_interface.unwrap_or(true),
            masters,
            master_intervals,
            xdp: self.xdp(),
            http_listen: self.http_listen()?,
            cache: CacheConfig::from_file(&self.cache.clone().unwrap_or_default())?,
        })
    }

    /// The upstream resolvers set by the file or `RESOLVERS` (not those of
    /// resolv.conf), parsed; `None` when none is set. The one parser of
    /// the list: the daemon, `check-config` and genresolv all read it here.
    pub fn configured_resolvers(&self) -> Result<Option<Vec<SocketAddr>>, ConfigError> {
        self.upstream_resolvers
            .as_ref()
            .map(|list| parse_servers("upstream_resolvers", list))
            .transpose()
    }

    fn listen_addresses(&self) -> Result<Vec<Ipv4Addr>, ConfigError> {
        match &self.listen_addresses {
            None => Ok(DEFAULT_LISTEN.to_vec()),
            Some(list) if list.is_empty() => Err(invalid("listen_addresses", "must not be empty")),
            Some(list) => parse_ipv4s("listen_addresses", list),
        }
    }

    fn forward_zones(
        &self,
        ours: &dyn Fn(&SocketAddr) -> bool,
    ) -> Result<BTreeMap<String, Vec<SocketAddr>>, ConfigError> {
        let mut forward_zones = BTreeMap::new();
        for (zone, servers) in self.forward_zones.iter().flatten() {
            let key = format!("forward_zones.{zone}");
            if servers.is_empty() {
                return Err(invalid(key, "a forward zone needs at least one server"));
            }
            let parsed = parse_servers(&key, servers)?;
            if let Some(sa) = parsed.iter().find(|sa| ours(sa)) {
                return Err(invalid(
                    key,
                    format!("{sa} is one of Spartan's own listen addresses"),
                ));
            }
            let name = zone.trim_end_matches('.').to_ascii_lowercase();
            if name.is_empty() || hickory_proto::rr::Name::from_ascii(&name).is_err() {
                return Err(invalid(key, format!("{zone:?} is not a domain name")));
            }
            forward_zones.insert(name, parsed);
        }
        Ok(forward_zones)
    }

    fn budget(&self) -> Result<Budget, ConfigError> {
        let max_in_flight = self.max_in_flight.unwrap_or(1024);
        if max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be more than 0"));
        }
        let share = |key: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(invalid(key, "must be more than 0")),
            Some(v) if v > max_in_flight => Err(invalid(key, "must not exceed max_in_flight")),
            Some(v) => Ok(v),
            None => Ok(default.max(1)),
        };
        let tcp_connections = self.max_tcp_connections.unwrap_or(256);
        if tcp_connections == 0 {
            return Err(invalid("max_tcp_connections", "must be more than 0"));
        }
        Ok(Budget {
            max_in_flight,
            per_client: share(
                "max_in_flight_per_client",
                self.max_in_flight_per_client,
                max_in_flight / 4,
            )?,
            per_upstream: share(
                "max_in_flight_per_upstream",
                self.max_in_flight_per_upstream,
                max_in_flight / 2,
            )?,
            tcp_connections,
        })
    }

    fn masters(&self) -> Result<(MasterSource, Intervals), ConfigError> {
        let m = self.masters.clone().unwrap_or_default();
        let source = match m.source.as_deref() {
            None if m.static_list.is_none() => MasterSource::None,
            None | Some("static") => MasterSource::Static(parse_ipv4s(
                "masters.static",
                m.static_list.as_deref().unwrap_or_default(),
            )?),
            Some("exhibitor") => {
                let host = m.exhibitor_address.clone().ok_or_else(|| {
                    invalid(
                        "masters.exhibitor_address",
                        "needed with source = \"exhibitor\"",
                    )
                })?;
                if host.trim().is_empty() || host.contains('/') {
                    return Err(invalid(
                        "masters.exhibitor_address",
                        format!("{host:?} is not a host"),
                    ));
                }
                // `host` gets Exhibitor's port; `host:port` keeps its own.
                let host = host.trim();
                let authority = if host.contains(':') {
                    host.to_string()
                } else {
                    format!("{host}:8181")
                };
                MasterSource::Exhibitor(format!("http://{authority}/exhibitor/v1/cluster/status"))
            }
            Some("exhibitor_uri") => {
                let uri = m.exhibitor_uri.clone().ok_or_else(|| {
                    invalid(
                        "masters.exhibitor_uri",
                        "needed with source = \"exhibitor_uri\"",
                    )
                })?;
                if !uri.starts_with("http://") {
                    return Err(invalid(
                        "masters.exhibitor_uri",
                        format!("{uri:?} is not an http:// URL"),
                    ));
                }
                MasterSource::Exhibitor(uri)
            }
            Some("master_list") => MasterSource::MasterListFile(PathBuf::from(
                m.master_list_file
                    .clone()
                    .unwrap_or_else(|| DEFAULT_MASTER_LIST.to_string()),
            )),
            Some(other) => {
                return Err(invalid(
                    "masters.source",
                    format!(
                        "{other:?} is not one of exhibitor, exhibitor_uri, master_list, static"
                    ),
                ));
            }
        };
        let intervals = Intervals {
            poll: millis("masters.poll_interval_ms", m.poll_interval_ms, 120_000)?,
            retry: millis("masters.retry_interval_ms", m.retry_interval_ms, 5_000)?,
            http_timeout: millis("masters.http_timeout_ms", m.http_timeout_ms, 30_000)?,
            file_check: millis(
                "masters.file_check_interval_ms",
                m.file_check_interval_ms,
                1_000,
            )?,
        };
        Ok((source, intervals))
    }

    fn http_listen(&self) -> Result<SocketAddr, ConfigError> {
        let text = self
            .http
            .as_ref()
            .and_then(|h| h.listen.clone())
            .unwrap_or_else(|| DEFAULT_HTTP_LISTEN.to_string());
        text.parse()
            .map_err(|_| invalid("http.listen", format!("{text:?} is not \"ip:port\"")))
    }

    fn xdp(&self) -> XdpConfig {
        let file = self.xdp.clone().unwrap_or_default();
        XdpConfig {
            enabled: file.enabled.unwrap_or(true),
            interfaces: file.interfaces.unwrap_or_default(),
            pin_dir: PathBuf::from(
                file.pin_dir
                    .unwrap_or_else(|| spartan_common::PIN_DIR.to_string()),
            ),
            detach_on_exit: file.detach_on_exit.unwrap_or(false),
        }
    }
}

/// The forwarding budget: in-flight queries overall and per share, TCP
/// connections.
struct Budget {
    max_in_flight: usize,
    per_client: usize,
    per_upstream: usize,
    tcp_connections: usize,
}

/// A duration key in milliseconds: `default` when unset, never 0.
fn millis(key: &str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(invalid(key, "must be more than 0")),
        v => Ok(Duration::from_millis(v)),
    }
}

/// A list of IPv4 addresses; an error names `key` and the bad entry.
fn parse_ipv4s(key: &str, list: &[String]) -> Result<Vec<Ipv4Addr>, ConfigError> {
    list.iter()
        .map(|s| {
            s.trim()
                .parse::<Ipv4Addr>()
                .map_err(|_| invalid(key, format!("{s:?} is not an IPv4 address")))
        })
        .collect()
}

/// A list of servers, `"ip"` or `"ip:port"` (port 53 by default).
pub fn parse_servers(key: &str, list: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    list.iter().map(|s| parse_server(key, s, 53)).collect()
}

/// `nameserver` lines of a resolv.conf.
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        .filter_map(|w| w.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<Config, ConfigError> {
        FileConfig::parse(Path::new("t.toml"), text)?.resolve("nameserver 192.0.2.53\n")
    }

    fn err_text(text: &str) -> String {
        resolve(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = FileConfig::default()
            .resolve("nameserver 198.51.100.1\nnameserver 192.0.2.53\n")
            .unwrap();
        assert_eq!(c.listen_addresses, DEFAULT_LISTEN.to_vec());
        assert_eq!(c.dns_port, 53);
        // Our own address in resolv.conf is skipped.
        assert_eq!(c.upstream_resolvers, vec!["192.0.2.53:53".parse().unwrap()]);
        assert_eq!(c.mesos_port, 61053);
        assert_eq!(c.upstream_timeout, Duration::from_secs(2));
        assert_eq!(c.query_deadline, Duration::from_secs(5));
        assert_eq!(c.max_in_flight, 1024);
        assert_eq!(c.tcp_idle_timeout, Duration::from_secs(10));
        assert!(c.xdp.enabled);
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = FileConfig::parse(
            Path::new("t.toml"),
            "upstream_resolvers = [\"192.0.2.1\"]\n[masters]\nsource = \"static\"\nstatic = [\"10.0.0.1\"]",
        )
        .unwrap();
        let env = |k: &str| match k {
            "MASTER_SOURCE" => Some("exhibitor".to_string()),
            "EXHIBITOR_ADDRESS" => Some("192.0.2.80".to_string()),
            "RESOLVERS" => Some("192.0.2.7,192.0.2.8:5353".to_string()),
            _ => None,
        };
        let env = crate::config_sources::env_layer(env).unwrap();
        let f = crate::config_sources::merge(&[
            (crate::config_sources::Origin::Default, &f),
            (crate::config_sources::Origin::Env("RESOLVERS"), &env),
        ])
        .unwrap()
        .file;
        let c = f.resolve("").unwrap();
        assert_eq!(
            c.masters,
            MasterSource::Exhibitor("http://192.0.2.80:8181/exhibitor/v1/cluster/status".into())
        );
        assert_eq!(c.upstream_resolvers.len(), 2);
        assert_eq!(c.master_intervals.poll, Duration::from_secs(120));
        assert_eq!(c.master_intervals.retry, Duration::from_secs(5));
        assert_eq!(c.master_intervals.http_timeout, Duration::from_secs(30));
        assert_eq!(c.http_listen, "127.0.0.1:62080".parse().unwrap());
    }

    #[test]
    fn no_usable_upstream_names_the_fix() {
        // What genresolv writes while Spartan runs: only Spartan's addresses.
        let resolv = "nameserver 198.51.100.1\nnameserver 198.51.100.2\n";
        let e = FileConfig::default()
            .resolve(resolv)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`upstream_resolvers`"), "{e}");
        assert!(e.contains("RESOLVERS"), "{e}");
        assert!(e.contains("no usable upstream"), "{e}");
        // Configured upstreams make resolv.conf irrelevant.
        let f = FileConfig {
            upstream_resolvers: Some(vec!["192.0.2.9".into()]),
            ..Default::default()
        };
        assert!(f.resolve(resolv).is_ok());
    }

    #[test]
    fn shares_default_to_parts_of_the_budget_and_are_checked() {
        let c = resolve("max_in_flight = 100").unwrap();
        assert_eq!(
            (c.max_in_flight_per_client, c.max_in_flight_per_upstream),
            (25, 50)
        );
        assert!(err_text("max_in_flight_per_client = 0").contains("max_in_flight_per_client"));
        assert!(
            err_text("max_in_flight = 10\nmax_in_flight_per_upstream = 11")
                .contains("max_in_flight_per_upstream")
        );
    }

    #[test]
    fn from_config_round_trips() {
        let text = "upstream_resolvers = [\"192.0.2.1\", \"192.0.2.2:5353\"]\n\
[forward_zones]\n\"corp.example\" = [\"192.0.2.9\"]\n\
[masters]\nsource = \"exhibitor\"\nexhibitor_address = \"192.0.2.80:8080\"\n";
        let first = resolve(text).unwrap();
        assert_eq!(
            first.masters,
            MasterSource::Exhibitor("http://192.0.2.80:8080/exhibitor/v1/cluster/status".into()),
            "host:port keeps its port"
        );
        let written = toml::to_string_pretty(&FileConfig::from_config(&first)).unwrap();
        let second = resolve(&written).unwrap();
        let rewritten = toml::to_string_pretty(&FileConfig::from_config(&second)).unwrap();
        assert_eq!(written, rewritten);
        assert!(
            !written.contains("secs") && !written.contains("None"),
            "{written}"
        );
    }

    #[test]
    fn port_zero_is_refused() {
        assert!(err_text("dns_port = 0").contains("`dns_port`"));
    }

    #[test]
    fn servers_parse_with_and_without_port() {
        let c = resolve("upstream_resolvers = [\"192.0.2.1\", \"192.0.2.2:5353\"]").unwrap();
        assert_eq!(
            c.upstream_resolvers,
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "192.0.2.2:5353".parse().unwrap()
            ]
        );
    }

    #[test]
    fn errors_name_the_key() {
        assert!(
            err_text("upstream_resolvers = [\"198.51.100.2\"]").contains("`upstream_resolvers`")
        );
        assert!(err_text("upstream_resolvers = [\"198.51.100.2\"]").contains("own listen"));
        assert!(err_text("upstream_resolvers = [\"nope\"]").contains("`upstream_resolvers`"));
        assert!(err_text("listen_addresses = [\"1.2.3\"]").contains("`listen_addresses`"));
        assert!(err_text("bogus_key = 1").contains("bogus_key"));
        assert!(
            err_text("[forward_zones]\n\"corp.example\" = []")
                .contains("forward_zones.corp.example")
        );
        assert!(err_text("upstream_timeout_ms = 0").contains("upstream_timeout_ms"));
        assert!(err_text("[masters]\nstatic = [\"x\"]").contains("masters.static"));
        assert!(err_text("[masters]\nsource = \"zookeeper\"").contains("masters.source"));
        assert!(
            err_text("[masters]\nsource = \"exhibitor\"").contains("masters.exhibitor_address")
        );
        assert!(err_text("[http]\nlisten = \"nope\"").contains("http.listen"));
    }
}
