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
    dns::server::{DnsServer, Listeners, Setup, TcpLimits},
    fastpath::{FastPath, InstanceLock, KernelMaps},
    forward::{Limits, Router},
    iface,
    link_watch::LinkWatcher,
    local_answers::LocalAnswers,
    masters::{self, MasterStatus},
    state::Shared,
    stats::Stats,
    zone,
};

/// How long in-flight queries may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// The only port the XDP program answers.
/// How often the heartbeat in the kernel map is refreshed.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// The XDP program (attached to `lo`) and its maps.
struct KernelPath {
    program: FastPath,
    maps: KernelMaps,
}

/// Loads and attaches the XDP program.
fn start_fast_path(config: &Config) -> Result<KernelPath> {
    let mut fast_path = FastPath::load(&config.xdp.pin_dir, config.dns_port)?;
    let mut maps = fast_path.maps()?;
    maps.write_listen_addrs(&config.listen_addresses)?;
    // Host processes reach Spartan through lo: without it there is no
    // kernel path worth having. The container-facing interfaces follow
    // (see `link_watch`).
    let mode = fast_path.attach("lo").context("attaching XDP to lo")?;
    tracing::info!(interface = "lo", %mode, "XDP program attached");
    Ok(KernelPath {
        program: fast_path,
        maps,
    })
}

/// Under systemd's watchdog (`WATCHDOG_USEC`, from the unit's `WatchdogSec`)
/// the self-check, which sends `WATCHDOG=1`, must come more often than the
/// watchdog expects it, or systemd kills a healthy daemon.
fn check_watchdog_interval(config: &Config, watchdog_usec: Option<&str>) -> Result<()> {
    let Some(usec) = watchdog_usec.and_then(|v| v.trim().parse::<u64>().ok()) else {
        return Ok(());
    };
    let watchdog = Duration::from_micros(usec);
    if config.self_check_interval * 2 > watchdog {
        anyhow::bail!(
            "`self_check_interval_ms` ({} ms) must be at most half of the unit's WatchdogSec \
             ({} ms), or systemd kills a healthy daemon between two checks",
            config.self_check_interval.as_millis(),
            watchdog.as_millis()
        );
    }
    Ok(())
}

/// Where the daemon records what it added to the node, for `spartan down`.
pub fn added_record(config: &Config) -> std::path::PathBuf {
    crate::fastpath::run_file(&config.xdp.pin_dir, "added")
}

/// The kernel path, when this daemon serves it. When it does not (turned
/// off, or it failed to start), a
/// program an earlier daemon left attached under the pin directory is
/// detached: the kernel must never answer from maps nobody writes.
fn kernel_path(config: &Config) -> Option<KernelPath> {
    let off = if !config.xdp.enabled {
        "turned off in the configuration".to_string()
    } else {
        match start_fast_path(config) {
            Ok(kernel) => {
                tracing::info!(port = config.dns_port, "kernel path on");
                return Some(kernel);
            }
            // Userspace still answers everything; the node keeps its DNS.
            Err(e) => format!("it failed to start: {e:#}"),
        }
    };
    tracing::warn!(reason = %off, "kernel path off: userspace answers everything");
    match FastPath::detach_all(&config.xdp.pin_dir) {
        Ok(detached) if !detached.is_empty() => tracing::warn!(
            interfaces = ?detached,
            pin_dir = %config.xdp.pin_dir.display(),
            "detached the XDP program an earlier daemon left attached: nothing would update its answers"
        ),
        Ok(_) => {}
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "detaching a left-over XDP program failed"
        ),
    }
    None
}

/// Raises the soft descriptor limit to the hard one: the forwarder's needs
/// are fixed, but TCP clients and the API take one each, and systemd's
/// default soft limit is 1024.
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if soft < limit.rlim_max && libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::info!(from = soft, to = limit.rlim_max, "descriptor limit raised");
        }
    }
}

/// The keys of `new` that differ from `old` and take effect only after a
/// restart.
fn keys_needing_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(
        old.listen_addresses != new.listen_addresses,
        "listen_addresses",
    );
    check(old.dns_port != new.dns_port, "dns_port");
    check(old.mesos_port != new.mesos_port, "mesos_port");
    check(old.max_in_flight != new.max_in_flight, "max_in_flight");
    check(
        old.max_in_flight_per_client != new.max_in_flight_per_client,
        "max_in_flight_per_client",
    );
    check(
        old.max_in_flight_per_upstream != new.max_in_flight_per_upstream,
        "max_in_flight_per_upstream",
    );
    check(
        old.max_tcp_connections != new.max_tcp_connections,
        "max_tcp_connections",
    );
    check(
        old.tcp_idle_timeout != new.tcp_idle_timeout,
        "tcp_idle_timeout_ms",
    );
    check(
        old.self_check_interval != new.self_check_interval,
        "self_check_interval_ms",
    );
    check(
        old.manage_interface != new.manage_interface,
        "manage_interface",
    );
    check(old.http_listen != new.http_listen, "http.listen");
    check(old.cache != new.cache, "cache");
    check(old.xdp.enabled != new.xdp.enabled, "xdp.enabled");
    check(old.xdp.interfaces != new.xdp.interfaces, "xdp.interfaces");
    check(old.xdp.pin_dir != new.xdp.pin_dir, "xdp.pin_dir");
    check(
        old.xdp.detach_on_exit != new.xdp.detach_on_exit,
        "xdp.detach_on_exit",
    );
    keys
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
            if !(name.starts_with("zk-") && name.ends_with(".zk.")) {
                return None;
            }
            let message = crate::cache::answer::kernel_message(&k, &v)?;
            let first = message.answers().iter().find_map(|r| match r.data() {
                hickory_proto::rr::RData::A(a) => Some(a.0),
                _ => None,
            })?;
            Some((name, first))
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
    let (local, router) = (shared.local.clone(), shared.router.clone());
    let cache = shared.cache.clone();
    tokio::spawn(masters::follow(
        config.masters.clone(),
        config.master_intervals.clone(),
        config.upstream_resolvers.clone(),
        shared.masters.clone(),
        move |list| {
            // One step: kernel map and zones first, then `*.mesos`.
            local.set_masters(list)?;
            router.set_masters(list);
            // Answers of the old masters' Mesos-DNS are not served on.
            let flushed = cache.flush_zone("mesos.");
            if flushed > 0 {
                tracing::info!(flushed, "new masters: cached *.mesos answers dropped");
            }
            Ok(())
        },
    ))
}

/// Runs the daemon. `reload` reads the configuration anew (SIGHUP).
pub async fn serve(config: Config, reload: impl Fn() -> Result<Config>) -> Result<()> {
    // Signals first: a SIGTERM during start-up is a clean shutdown too.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    check_watchdog_interval(&config, std::env::var("WATCHDOG_USEC").ok().as_deref())?;
    // Before anything on the node is touched: one daemon per pin directory.
    let _lock = InstanceLock::acquire(&config.xdp.pin_dir)?;
    raise_fd_limit();
    if config.manage_interface {
        let placed = iface::ensure(&config.listen_addresses).await;
        if let Ok((_, added)) = &placed
            && let Err(e) = iface::Added::record(&added_record(&config), added)
        {
            tracing::warn!(
                error = format!("{e:#}"),
                "recording the added addresses failed (`spartan down` will keep them)"
            );
        }
        match placed.map(|(p, _)| p) {
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
    let addrs: Vec<SocketAddr> = config
        .listen_addresses
        .iter()
        .map(|a| SocketAddr::from((*a, config.dns_port)))
        .collect();
    // The sockets first: a daemon that cannot serve never writes a map.
    let (listeners, activated) = Listeners::inherited_or_bound(&addrs)?;
    if activated {
        tracing::info!("listen sockets passed by systemd (socket activation)");
    }
    let stats = Arc::new(Stats::default());
    let fast_path = kernel_path(&config);
    let initial_masters = match (&config.masters, &fast_path) {
        (masters::MasterSource::Static(list), _) => list.clone(),
        (masters::MasterSource::None, _) => Vec::new(),
        (_, Some(kernel)) => masters_from_kernel(&kernel.maps),
        (_, None) => Vec::new(),
    };
    let local = Arc::new(LocalAnswers::new(
        config.listen_addresses[0],
        &initial_masters,
    ));
    let cache = Arc::new(crate::cache::AnswerCache::new(&config.cache, stats.clone()));
    let kernel_path = fast_path.is_some();
    let watcher = match fast_path {
        Some(mut kernel) => {
            if config.cache.enabled {
                cache.attach_kernel(kernel.maps.answer_table()?);
            }
            local.attach_kernel(kernel.maps)?;
            let program = Arc::new(std::sync::Mutex::new(kernel.program));
            match LinkWatcher::start(
                program,
                config.xdp.pin_dir.clone(),
                config.xdp.interfaces.clone(),
                Default::default(),
            )
            .await
            {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "following interfaces failed: the kernel path serves lo only"
                    );
                    None
                }
            }
        }
        None => None,
    };
    let router = Arc::new(Router::new(&config, &initial_masters));
    let master_status = Arc::new(MasterStatus::default());
    *master_status.current.lock().expect("status lock") = initial_masters.clone();
    let shared = Arc::new(Shared {
        config: std::sync::RwLock::new(config.clone()),
        stats: stats.clone(),
        cache: cache.clone(),
        local: local.clone(),
        router: router.clone(),
        masters: master_status,
        kernel_path,
        health: Arc::new(crate::selfcheck::Health::default()),
    });
    let server = DnsServer::start(
        listeners,
        Setup {
            local: local.clone(),
            router: router.clone(),
            stats: stats.clone(),
            cache: cache.clone(),
            limits: Limits {
                max_in_flight: config.max_in_flight,
                per_client: config.max_in_flight_per_client,
                per_upstream: config.max_in_flight_per_upstream,
            },
            tcp: TcpLimits {
                max_connections: config.max_tcp_connections,
                idle_timeout: config.tcp_idle_timeout,
            },
        },
    )?;
    let mut discovery = spawn_discovery(&shared, &config);
    let control_path = crate::control::socket_path(&config.xdp.pin_dir);
    let control = match crate::control::start(&control_path, cache.clone()) {
        Ok(task) => Some(task),
        Err(e) => {
            // Operators lose `spartan cache flush`; DNS keeps running.
            tracing::error!(error = format!("{e:#}"), "control socket unavailable");
            None
        }
    };
    let http = match crate::http::start(config.http_listen, shared.clone(), stats.clone()).await {
        Ok(task) => Some(task),
        Err(e) => {
            // DNS matters more than the API: keep serving, say why.
            tracing::error!(error = format!("{e:#}"), "HTTP API unavailable");
            None
        }
    };
    let self_check = tokio::spawn(crate::selfcheck::check_periodically(
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
                        let restart = keys_needing_restart(&old, &new);
                        if !restart.is_empty() {
                            tracing::warn!(keys = ?restart, "SIGHUP: these keys changed but take effect only after a restart");
                        }
                        router.reconfigure(&new);
                        // Exhibitor host names are resolved through the resolvers.
                        if new.masters != old.masters
                            || new.master_intervals != old.master_intervals
                            || new.upstream_resolvers != old.upstream_resolvers
                        {
                            discovery.abort();
                            discovery = spawn_discovery(&shared, &new);
                        }
                        *shared.config.write().expect("config lock") = new;
                        // Answers from the old upstreams are not served on.
                        let flushed = shared.cache.flush(None);
                        tracing::info!(flushed, "SIGHUP: upstreams, forward zones, timeouts and master source reloaded; cache flushed");
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
    if let Some(c) = control {
        c.abort();
        let _ = std::fs::remove_file(&control_path);
    }
    if let Some(h) = heartbeat {
        h.abort();
    }
    server.shutdown(SHUTDOWN_GRACE).await;
    // What this daemon attached, under the pin directory it started with
    // (a reload does not move either).
    let mut attached = vec!["lo".to_string()];
    if let Some(w) = &watcher {
        w.stop();
        attached.extend(w.attached.lock().expect("attached lock").keys().cloned());
    }
    if kernel_path && config.xdp.detach_on_exit {
        for interface in &attached {
            FastPath::detach(&config.xdp.pin_dir, interface)?;
        }
        tracing::info!(interfaces = ?attached, "XDP program detached");
    } else if kernel_path {
        // Left attached: zk answers keep flowing until the next daemon
        // takes over the links; ready.spartan lapses with the heartbeat.
        tracing::info!("XDP program left attached for the next start (`spartan down` removes it)");
    }
    Ok(())
}
