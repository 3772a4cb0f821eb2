//! `spartan run`: wires the fast path, the local zones, the forwarder and
//! the listeners together, and runs until SIGTERM or SIGINT.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    dns::{
        Handler,
        server::{Limits, Server},
    },
    fastpath::FastPath,
    forward::Forwarder,
    local_data::LocalData,
    stats::Stats,
};

/// How long in-flight queries may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often the heartbeat in the kernel map is refreshed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Loads and attaches the XDP program and fills its maps from the zones.
fn start_fast_path(config: &Config, local: &LocalData) -> Result<FastPath> {
    let mut fast_path = FastPath::load(&config.xdp.pin_dir)?;
    let mut maps = fast_path.maps()?;
    maps.write_listen_addrs(&config.listen_addresses)?;
    local.attach_kernel(maps)?;
    let mut interfaces = vec!["lo".to_string()];
    interfaces.extend(config.xdp.interfaces.iter().filter(|i| *i != "lo").cloned());
    for interface in &interfaces {
        let mode = fast_path
            .attach(interface)
            .with_context(|| format!("attaching XDP to {interface}"))?;
        tracing::info!(%interface, %mode, "XDP program attached");
    }
    Ok(fast_path)
}

pub async fn run(config: Config) -> Result<()> {
    let stats = Arc::new(Stats::default());
    let local = Arc::new(LocalData::new(config.listen_addresses[0], &config.masters));
    let fast_path = if config.xdp.enabled {
        match start_fast_path(&config, &local) {
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
    let forwarder = Arc::new(Forwarder::new(&config, stats.clone()));
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
    let server = Server::start(&addrs, handler, limits).await?;
    tracing::info!(
        udp = ?server.udp_addrs,
        upstreams = ?config.upstream_resolvers,
        masters = ?config.masters,
        kernel_path = fast_path.is_some(),
        "serving"
    );

    // The heartbeat tells the kernel that `ready.spartan` may be answered.
    let heartbeat = if fast_path.is_some() {
        let local = local.clone();
        Some(tokio::spawn(async move {
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
        }))
    } else {
        None
    };

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    if let Some(h) = heartbeat {
        h.abort();
    }
    server.shutdown(SHUTDOWN_GRACE).await;
    if fast_path.is_some() && config.xdp.detach_on_exit {
        let mut interfaces = vec!["lo".to_string()];
        interfaces.extend(config.xdp.interfaces.iter().cloned());
        for interface in interfaces {
            FastPath::detach(&config.xdp.pin_dir, &interface)?;
        }
        tracing::info!("XDP program detached");
    } else if fast_path.is_some() {
        // Left attached: zk answers keep flowing until the next daemon
        // takes over the links; ready.spartan lapses with the heartbeat.
        tracing::info!("XDP program left attached for the next start (`spartan down` removes it)");
    }
    Ok(())
}
