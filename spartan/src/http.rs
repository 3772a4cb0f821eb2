//! The HTTP API: metrics, the original's JSON endpoints, health.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use hickory_proto::rr::{LowerName, Name, RData};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use hyper_util::{rt::TokioIo, rt::TokioTimer, service::TowerToHyperService};
use tokio::sync::Semaphore;

use crate::{state::Shared, stats::Stats};

struct Api {
    shared: Arc<Shared>,
    registry: Registry,
}

type ApiState = State<Arc<Api>>;

async fn metrics(State(api): ApiState) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&api.registry),
    )
}

async fn version() -> Json<Value> {
    Json(json!({ "spartan": env!("CARGO_PKG_VERSION") }))
}

async fn records(State(api): ApiState) -> Json<Value> {
    let zones = api.shared.local.zones();
    let list: Vec<Value> = zones
        .zones()
        .iter()
        .flat_map(|z| z.records())
        .map(|r| {
            json!({
                "name": r.name().to_ascii(),
                "type": r.record_type().to_string(),
                "ttl": r.ttl(),
                "data": r.data().to_string(),
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn hosts(State(api): ApiState, Path(host): Path<String>) -> impl IntoResponse {
    let Ok(mut name) = Name::from_ascii(&host) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "not a host name"})),
        );
    };
    name.set_fqdn(true);
    let lower = LowerName::new(&name);
    let zones = api.shared.local.zones();
    let found: Vec<Value> = zones
        .zones()
        .iter()
        .flat_map(|z| z.records())
        .filter(|r| LowerName::new(r.name()) == lower)
        .filter_map(|r| match r.data() {
            RData::A(a) => {
                Some(json!({ "host": host.trim_end_matches('.'), "ip": a.0.to_string() }))
            }
            _ => None,
        })
        .collect();
    if found.is_empty() {
        return (StatusCode::NOT_FOUND, Json(Value::Array(found)));
    }
    (StatusCode::OK, Json(Value::Array(found)))
}

async fn upstreams(State(api): ApiState) -> Json<Value> {
    let list: Vec<Value> = api
        .shared
        .router
        .all_upstreams()
        .into_iter()
        .map(|(route, u)| {
            let report = u.report();
            json!({
                "zone": route,
                "address": u.addr.to_string(),
                "score": report.score,
                "latency_ms": report.latency_ms,
                "successes": report.successes,
                "failures": report.failures,
            })
        })
        .collect();
    Json(Value::Array(list))
}

/// Most entries `/v1/cache` lists (the counts cover all of them).
const CACHE_LISTING_MAX: usize = 10_000;

/// The answer cache: its size, and its entries (most recently used first)
/// with the seconds each has left (negative: expired, kept for serve-stale).
async fn cache(State(api): ApiState) -> Json<Value> {
    let cache = &api.shared.cache;
    let (entries, bytes, in_kernel) = cache.size();
    let mut listed = cache.entries(crate::fastpath::monotonic_ns());
    listed.truncate(CACHE_LISTING_MAX);
    Json(json!({
        "enabled": cache.enabled(),
        "entries": entries,
        "bytes": bytes,
        "in_kernel": in_kernel,
        "listed": listed,
    }))
}

async fn stats_json(State(api): ApiState) -> Json<Value> {
    Json(json!({
        "daemon": api.shared.stats.snapshot(),
        "masters": *api.shared.masters.current.lock().expect("status lock"),
        "self_check_ok": api.shared.health.ok.load(Ordering::Relaxed),
        "kernel_path": api.shared.kernel_path,
    }))
}

async fn healthz(State(api): ApiState) -> impl IntoResponse {
    if api.shared.health.ok.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "self-check failing\n")
    }
}

async fn readyz(State(api): ApiState) -> impl IntoResponse {
    if api.shared.health.ever_ok.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

/// Connections the API serves at once; more are closed at accept, so that
/// idle or slow HTTP clients can never take descriptors from DNS.
pub const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time (also between
/// requests on a kept-alive connection), or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `listen` and serves the API until the task is aborted.
pub async fn start(
    listen: SocketAddr,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
) -> Result<tokio::task::JoinHandle<()>> {
    let api = Arc::new(Api {
        registry: crate::metrics::registry(shared.clone()),
        shared,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/version", get(version))
        .route("/v1/records", get(records))
        .route("/v1/hosts/{host}", get(hosts))
        .route("/v1/upstreams", get(upstreams))
        .route("/v1/stats", get(stats_json))
        .route("/v1/cache", get(cache))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the HTTP API on {listen}"))?;
    Ok(tokio::spawn(serve(listener, app, stats)))
}

async fn serve(listener: tokio::net::TcpListener, app: Router, stats: Arc<Stats>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                    Stats::inc(&stats.accept_backoffs);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            Stats::inc(&stats.http_refused);
            continue;
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
}
