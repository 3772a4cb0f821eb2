//! The HTTP API: metrics, the original's JSON endpoints, health.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
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

use crate::daemon::Shared;

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
        .forwarder
        .all_upstreams()
        .into_iter()
        .map(|(route, u)| {
            let (successes, failures, latency_ms, score) = u.report();
            json!({
                "zone": route,
                "address": u.addr.to_string(),
                "score": score,
                "latency_ms": latency_ms,
                "successes": successes,
                "failures": failures,
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn stats(State(api): ApiState) -> Json<Value> {
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

/// Binds `listen` and serves the API until the task is aborted.
pub async fn start(listen: SocketAddr, shared: Arc<Shared>) -> Result<tokio::task::JoinHandle<()>> {
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
        .route("/v1/stats", get(stats))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the HTTP API on {listen}"))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP API stopped");
        }
    }))
}
