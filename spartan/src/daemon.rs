//! `spartan run`: wires the interface, the fast path, the local zones, the
//! forwarder, master discovery and the listeners together, and runs until
//! SIGTERM or SIGINT. SIGHUP reloads the configuration.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinHandle,
};

use crate::{
    config::Config,
    dns::{
        Handler,
        server::{Limits, Server},
    },
    fastpath::{FastPath, KernelMaps},
    forward::Forwarder,
    iface,
    local_data::LocalData,
    masters::{self, MasterStatus},
    stats::Stats,
    zone,
};

/// How long in-flight queries may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often the heartbeat in the kernel map is refreshed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Everything a running daemon shares with its API and tasks.
pub struct Shared {
    pub config: std::sync::RwLock<Config>,
    pub stats: Arc<Stats>,
    pub local: Arc<LocalData>,
    pub forwarder: Arc<Forwarder>,
    pub masters: Arc<MasterStatus>,
    pub kernel_path: bool,
    pub health: Arc<crate::selfcheck::Health>,
    pub in_flight: Arc<tokio::sync::Semaphore>,
    pub max_in_flight: usize,
}

/// Loads and attaches the XDP program; returns it with its maps.
fn start_fast_path(config: &Config) -> Result<(FastPath, KernelMaps)> {
    let mut fast_path = FastPath::load(&config.xdp.pin_dir)?;
    let mut maps = fast_path.maps()?;
    maps.write_listen_addrs(&config.listen_addresses)?;
    let mut interfaces = vec!["lo".to_string()];
    interfaces.extend(config.xdp.interfaces.iter().filter(|i| *i != "lo").cloned());
    for interface in &interfaces {
        let mode = fast_path
            .attach(interface)
            .with_context(|| format!("attaching XDP to {interface}"))?;
        tracing::info!(%interface, %mode, "XDP program attached");
    }
    Ok((fast_path, maps))
}

/// The masters a previous daemon left in the kernel's zk answers: served
/// until discovery answers, so that a restart never empties the zk zone.
fn masters_from_kernel(maps: &KernelMaps) -> Vec<Ipv4Addr> {
    let mut zk: Vec<(String, Ipv4Addr)> = maps
        .answers()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let name = zone::key_name(&k);
            (name.starts_with("zk-") && name.ends_with(".zk.") && v.count > 0)
                .then(|| (name, Ipv4Addr::from(v.addrs[0])))
        })
        .collect();
    zk.sort();
    let mut out = Vec::new();
    for (_, addr) in zk {
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

fn spawn_discovery(shared: &Arc<Shared>, config: &Config) -> JoinHandle<()> {
    let (local, forwarder) = (shared.local.clone(), shared.forwarder.clone());
    tokio::spawn(masters::run(
        config.masters.clone(),
        config.master_intervals.clone(),
        shared.masters.clone(),
        move |list| {
            // One step: kernel map and zones first, then `*.mesos`.
            local.set_masters(list)?;
            forwarder.set_masters(list);
            Ok(())
        },
    ))
}

/// Runs the daemon. `reload` reads the configuration anew (SIGHUP).
pub async fn run(config: Config, reload: impl Fn() -> Result<Config>) -> Result<()> {
    // Signals first: a SIGTERM during start-up is a clean shutdown too.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    if config.manage_interface {
        match iface::ensure(&config.listen_addresses).await {
            Ok(iface::Placement::Dummy) => {
                tracing::info!(device = iface::DEVICE, addrs = ?config.listen_addresses, "listen addresses on the dummy device")
            }
            Ok(iface::Placement::Loopback) => {
                tracing::info!(addrs = ?config.listen_addresses, "no dummy device support: listen addresses put on lo")
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "setting up the listen addresses failed"
            ),
        }
    }
    let stats = Arc::new(Stats::default());
    let fast_path = if config.xdp.enabled {
        match start_fast_path(&config) {
            Ok(fp) => Some(fp),
            Err(e) => {
                // Userspace still answers everything; the node keeps its DNS.
                tracing::error!(
                    error = format!("{e:#}"),
                    "XDP fast path unavailable, answering from userspace only"
                );
                None
            }
        }
    } else {
        None
    };
    let initial_masters = match (&config.masters, &fast_path) {
        (masters::MasterSource::Static(list), _) => list.clone(),
        (masters::MasterSource::None, _) => Vec::new(),
        (_, Some((_, maps))) => masters_from_kernel(maps),
        (_, None) => Vec::new(),
    };
    let local = Arc::new(LocalData::new(config.listen_addresses[0], &initial_masters));
    let kernel_path = fast_path.is_some();
    let _program = if let Some((program, maps)) = fast_path {
        local.attach_kernel(maps)?;
        Some(program)
    } else {
        None
    };
    let forwarder = Arc::new(Forwarder::new(&config, &initial_masters, stats.clone()));
    let master_status = Arc::new(MasterStatus::default());
    *master_status.current.lock().expect("status lock") = initial_masters.clone();
    let shared = Arc::new(Shared {
        config: std::sync::RwLock::new(config.clone()),
        stats: stats.clone(),
        local: local.clone(),
        forwarder: forwarder.clone(),
        masters: master_status,
        kernel_path,
        health: Arc::new(crate::selfcheck::Health::default()),
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_in_flight)),
        max_in_flight: config.max_in_flight,
    });
    let handler = Arc::new(Handler::new(
        local.clone(),
        forwarder.clone(),
        stats.clone(),
    ));
    let addrs: Vec<SocketAddr> = config
        .listen_addresses
        .iter()
        .map(|a| SocketAddr::from((*a, config.dns_port)))
        .collect();
    let limits = Limits {
        max_in_flight: config.max_in_flight,
        max_tcp_connections: config.max_tcp_connections,
        tcp_idle_timeout: config.tcp_idle_timeout,
    };
    let server = Server::start(&addrs, handler, limits, shared.in_flight.clone()).await?;
    let mut discovery = spawn_discovery(&shared, &config);
    let http = match crate::http::start(config.http_listen, shared.clone()).await {
        Ok(task) => Some(task),
        Err(e) => {
            // DNS matters more than the API: keep serving, say why.
            tracing::error!(error = format!("{e:#}"), "HTTP API unavailable");
            None
        }
    };
    let self_check = tokio::spawn(crate::selfcheck::run(
        addrs[0],
        config.self_check_interval,
        shared.health.clone(),
        crate::notify::watchdog_ping,
    ));
    tracing::info!(
        udp = ?server.udp_addrs,
        upstreams = ?config.upstream_resolvers,
        masters = ?config.masters,
        kernel_path,
        "serving"
    );

    // The heartbeat tells the kernel that `ready.spartan` may be answered:
    // it starts only now that the listeners answer.
    let heartbeat = kernel_path.then(|| {
        let local = local.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            let mut failing = false;
            loop {
                tick.tick().await;
                match local.with_kernel(|maps| maps.beat()) {
                    Some(Err(e)) if !failing => {
                        failing = true;
                        tracing::error!(error = %e, "heartbeat write failed");
                    }
                    Some(Ok(())) if failing => {
                        failing = false;
                        tracing::info!("heartbeat writes work again");
                    }
                    _ => {}
                }
            }
        })
    });

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                match reload() {
                    Ok(new) => {
                        let old = shared.config.read().expect("config lock").clone();
                        if new.listen_addresses != old.listen_addresses || new.dns_port != old.dns_port {
                            tracing::warn!("listen addresses and port change only with a restart");
                        }
                        forwarder.reconfigure(&new);
                        if new.masters != old.masters || new.master_intervals != old.master_intervals {
                            discovery.abort();
                            discovery = spawn_discovery(&shared, &new);
                        }
                        *shared.config.write().expect("config lock") = new;
                        tracing::info!("SIGHUP: configuration reloaded");
                    }
                    Err(e) => tracing::error!(error = format!("{e:#}"), "SIGHUP: the new configuration is invalid; keeping the running one"),
                }
            }
        }
    }
    discovery.abort();
    self_check.abort();
    if let Some(h) = http {
        h.abort();
    }
    if let Some(h) = heartbeat {
        h.abort();
    }
    server.shutdown(SHUTDOWN_GRACE).await;
    let config = shared.config.read().expect("config lock").clone();
    if kernel_path && config.xdp.detach_on_exit {
        let mut interfaces = vec!["lo".to_string()];
        interfaces.extend(config.xdp.interfaces.iter().cloned());
        for interface in interfaces {
            FastPath::detach(&config.xdp.pin_dir, &interface)?;
        }
        tracing::info!("XDP program detached");
    } else if kernel_path {
        // Left attached: zk answers keep flowing until the next daemon
        // takes over the links; ready.spartan lapses with the heartbeat.
        tracing::info!("XDP program left attached for the next start (`spartan down` removes it)");
    }
    Ok(())
}
