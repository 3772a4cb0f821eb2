//! Prometheus metrics, read from the daemon's state at each scrape.

use std::{
    sync::{Arc, atomic::Ordering},
    time::UNIX_EPOCH,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use spartan_common::Counter;

use crate::{
    forward::upstream::FAILURE_REASONS,
    state::Shared,
    stats::{self, AnswerLabels, RcodeLabel},
};

type Labels = Vec<(&'static str, String)>;

struct SpartanCollector(Arc<Shared>);

impl std::fmt::Debug for SpartanCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpartanCollector")
    }
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, u64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        if labels.is_empty() {
            ConstCounter::new(v).encode(m)?;
            break;
        }
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, f64)>,
) -> std::fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        // A metric without labels has one sample and no braces.
        if labels.is_empty() {
            ConstGauge::new(v).encode(m)?;
            break;
        }
        ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SpartanCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let stats = s.stats.snapshot();
        let breakdown = &s.stats.breakdown;
        breakdown.queries.encode(e.encode_descriptor(
            "spartan_queries",
            "Queries received, by protocol and outcome (local, forwarded, error, dropped).",
            None,
            MetricType::Counter,
        )?)?;
        // The kernel's answers, from its per-CPU counters, go beside the
        // daemon's as one more source.
        let kernel = s.local.with_kernel(|m| m.counters().ok()).flatten();
        if let Some(k) = &kernel {
            breakdown
                .answers
                .get_or_create(&AnswerLabels {
                    source: stats::Source::Kernel,
                    rcode: RcodeLabel::All,
                })
                .inner()
                .store(k.get(Counter::Answered), Ordering::Relaxed);
        }
        breakdown.answers.encode(e.encode_descriptor(
            "spartan_answers",
            "Answers by source (kernel, local, upstream, generated, cache) and RCODE.",
            None,
            MetricType::Counter,
        )?)?;
        counter(
            &mut e,
            "spartan_dropped",
            "Queries dropped, by reason.",
            vec![
                (
                    vec![("reason", "overload".to_string())],
                    stats.dropped_overload,
                ),
                (
                    vec![("reason", "garbage".to_string())],
                    stats.dropped_garbage,
                ),
                (
                    vec![("reason", "client_share".to_string())],
                    stats.dropped_client_share,
                ),
                (
                    vec![("reason", "upstream_share".to_string())],
                    stats.dropped_upstream_share,
                ),
                (
                    vec![("reason", "tcp_connection_refused".to_string())],
                    stats.tcp_refused,
                ),
                (
                    vec![("reason", "tcp_write_timeout".to_string())],
                    stats.tcp_write_timeouts,
                ),
                (
                    vec![("reason", "http_connection_refused".to_string())],
                    stats.http_refused,
                ),
            ],
        )?;
        let in_flight = stats.in_flight;
        gauge(
            &mut e,
            "spartan_in_flight",
            "Forwarded queries in flight.",
            vec![(vec![], in_flight as f64)],
        )?;
        let mut hits = vec![(vec![("layer", "userspace".to_string())], stats.cache_hits)];
        if let Some(k) = &kernel {
            hits.push((
                vec![("layer", "kernel".to_string())],
                k.get(Counter::AnsweredFromCache),
            ));
        }
        counter(
            &mut e,
            "spartan_cache_hits",
            "Queries answered from the answer cache, by layer (kernel, userspace).",
            hits,
        )?;
        for (name, help, value) in [
            (
                "spartan_cache_misses",
                "Cacheable queries that found no fresh answer.",
                stats.cache_misses,
            ),
            (
                "spartan_cache_stale_served",
                "Expired answers served because every upstream failed (RFC 8767).",
                stats.cache_stale_served,
            ),
            (
                "spartan_cache_flight_waits",
                "Queries that waited for an identical query's upstream exchange.",
                stats.cache_flight_waits,
            ),
            (
                "spartan_cache_inserts",
                "Upstream answers stored in the cache.",
                stats.cache_inserts,
            ),
            (
                "spartan_cache_evictions",
                "Entries pushed out by max_entries or max_bytes.",
                stats.cache_evictions,
            ),
        ] {
            counter(&mut e, name, help, vec![(vec![], value)])?;
        }
        let (entries, bytes, in_kernel) = s.cache.size();
        gauge(
            &mut e,
            "spartan_cache_entries",
            "Answers in the cache, by layer (the kernel holds a mirror of some).",
            vec![
                (vec![("layer", "userspace".to_string())], entries as f64),
                (vec![("layer", "kernel".to_string())], in_kernel as f64),
            ],
        )?;
        gauge(
            &mut e,
            "spartan_cache_bytes",
            "Bytes of answers in the userspace cache.",
            vec![(vec![], bytes as f64)],
        )?;
        counter(
            &mut e,
            "spartan_upstream_stray_replies",
            "Upstream replies dropped: wrong source, ID or question.",
            vec![(vec![], stats.upstream_stray)],
        )?;

        let routes = s.router.all_routes();
        counter(
            &mut e,
            "spartan_forward_failures",
            "Forwarded queries that got no usable answer, by zone.",
            routes
                .iter()
                .map(|(zone, set)| {
                    (
                        vec![("zone", zone.clone())],
                        set.failures.load(Ordering::Relaxed),
                    )
                })
                .collect(),
        )?;
        let mut successes = Vec::new();
        let mut failures = Vec::new();
        let mut scores = Vec::new();
        for (route, set) in &routes {
            for u in &set.upstreams {
                let base = vec![("upstream", u.addr.to_string()), ("zone", route.clone())];
                let report = u.report();
                successes.push((base.clone(), report.successes));
                for (i, reason) in FAILURE_REASONS.iter().enumerate() {
                    let mut l = base.clone();
                    l.push(("reason", reason.to_string()));
                    failures.push((l, u.failures_by_reason[i].load(Ordering::Relaxed)));
                }
                scores.push((base, report.score));
            }
        }
        counter(
            &mut e,
            "spartan_upstream_successes",
            "Usable answers from each upstream.",
            successes,
        )?;
        counter(
            &mut e,
            "spartan_upstream_failures",
            "Failed exchanges with each upstream, by reason.",
            failures,
        )?;
        gauge(
            &mut e,
            "spartan_upstream_score",
            "Current score of each upstream (lower is better).",
            scores,
        )?;
        {
            let mut m = e.encode_descriptor(
                "spartan_upstream_request_duration_seconds",
                "Time of each exchange with an upstream.",
                None,
                MetricType::Histogram,
            )?;
            for (route, set) in &routes {
                for u in &set.upstreams {
                    let labels: Labels =
                        vec![("upstream", u.addr.to_string()), ("zone", route.clone())];
                    u.latency.encode(m.encode_family(&labels)?)?;
                }
            }
        }

        let zones = s.local.zones();
        gauge(
            &mut e,
            "spartan_zone_records",
            "Records in each local zone.",
            zones
                .zones()
                .iter()
                .map(|z| {
                    (
                        vec![("zone", z.origin().to_string())],
                        z.records().count() as f64,
                    )
                })
                .collect(),
        )?;
        if let Some(k) = &kernel {
            counter(
                &mut e,
                "spartan_kernel",
                "The XDP program's counters, summed over CPUs.",
                k.0.iter()
                    .map(|(c, v)| (vec![("counter", c.name().to_string())], *v))
                    .collect(),
            )?;
        }
        let last = s
            .masters
            .last_success
            .lock()
            .expect("status lock")
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        gauge(
            &mut e,
            "spartan_masters_last_success_timestamp_seconds",
            "When the master source last answered.",
            vec![(vec![], last)],
        )?;
        gauge(
            &mut e,
            "spartan_masters_consecutive_failures",
            "Failures of the master source since its last success.",
            vec![(
                vec![],
                s.masters.consecutive_failures.load(Ordering::Relaxed) as f64,
            )],
        )?;
        gauge(
            &mut e,
            "spartan_masters",
            "Masters in the current list.",
            vec![(
                vec![],
                s.masters.current.lock().expect("status lock").len() as f64,
            )],
        )?;
        gauge(
            &mut e,
            "spartan_self_check_ok",
            "1 while the self-check (ready.spartan over UDP and TCP) passes.",
            vec![(vec![], s.health.ok.load(Ordering::Relaxed) as u8 as f64)],
        )?;
        gauge(
            &mut e,
            "spartan_build_info",
            "Version of the running daemon.",
            vec![(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_string()),
                    ("kernel_path", s.kernel_path.to_string()),
                ],
                1.0,
            )],
        )?;
        Ok(())
    }
}

/// A registry that reads `shared` at every scrape.
pub fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SpartanCollector(shared)));
    registry
}

/// The text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}
