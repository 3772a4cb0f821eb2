//! Upstream servers and their health: a score from recent latency and
//! failures that decays over time, so that a server that failed a while ago
//! is tried again and a recovered one wins back its place.

use std::{
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failures lose half their weight every this long.
const FAILURE_HALF_LIFE: Duration = Duration::from_secs(10);
/// Weight of a new latency sample in the moving average.
const LATENCY_ALPHA: f64 = 0.3;
/// What one (decayed) failure adds to the score, in milliseconds.
const FAILURE_PENALTY_MS: f64 = 1000.0;
/// A query also goes to one more upstream when the best ones have not been
/// challenged for this long, so that a recovered upstream is noticed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Health {
    latency_ms: f64,
    failures: f64,
    updated: Instant,
    successes: u64,
    failures_total: u64,
}

/// One upstream server.
#[derive(Debug)]
pub struct Upstream {
    pub addr: SocketAddr,
    health: Mutex<Health>,
    /// Request latency in seconds, every outcome.
    pub latency: prometheus_client::metrics::histogram::Histogram,
    /// Failures by reason: [rcode, timeout, network].
    pub failures_by_reason: [std::sync::atomic::AtomicU64; 3],
    /// Exchanges sent and not yet ended. A dead upstream piles them up long
    /// before its first timeout, so they count in the score at once.
    pub outstanding: std::sync::atomic::AtomicU64,
}

/// What each outstanding exchange adds to the score, in milliseconds.
const OUTSTANDING_PENALTY_MS: f64 = 1.0;

/// Names of `failures_by_reason`, in order.
pub const FAILURE_REASONS: [&str; 3] = ["rcode", "timeout", "network"];

/// How one exchange with an upstream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A usable answer (NOERROR or NXDOMAIN).
    Usable,
    /// A reply with another rcode (SERVFAIL, REFUSED, ...).
    Failed,
    /// No reply in time.
    NoReply,
    /// A network error or a malformed reply.
    Error,
}

impl Upstream {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            health: Mutex::new(Health {
                latency_ms: 0.0,
                failures: 0.0,
                updated: Instant::now(),
                successes: 0,
                failures_total: 0,
            }),
            latency: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets_range(0.001, 5.0, 14),
            ),
            failures_by_reason: Default::default(),
            outstanding: Default::default(),
        }
    }

    fn decayed(h: &Health, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(h.updated).as_secs_f64();
        h.failures * 0.5f64.powf(dt / FAILURE_HALF_LIFE.as_secs_f64())
    }

    /// Lower is better.
    pub fn score(&self, now: Instant) -> f64 {
        let outstanding = self.outstanding.load(std::sync::atomic::Ordering::Relaxed) as f64;
        let h = self.health.lock().expect("health lock");
        h.latency_ms
            + Self::decayed(&h, now) * FAILURE_PENALTY_MS
            + outstanding * OUTSTANDING_PENALTY_MS
    }

    /// Records one exchange; `latency` is how long it took.
    pub fn record(&self, outcome: Outcome, latency: Duration) {
        self.latency.observe(latency.as_secs_f64());
        let reason = match outcome {
            Outcome::Usable => None,
            Outcome::Failed => Some(0),
            Outcome::NoReply => Some(1),
            Outcome::Error => Some(2),
        };
        if let Some(r) = reason {
            self.failures_by_reason[r].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let now = Instant::now();
        let mut h = self.health.lock().expect("health lock");
        let failures = Self::decayed(&h, now);
        h.failures = failures;
        h.updated = now;
        let ms = latency.as_secs_f64() * 1000.0;
        match outcome {
            Outcome::Usable => {
                h.successes += 1;
                h.latency_ms = if h.successes == 1 {
                    ms
                } else {
                    h.latency_ms * (1.0 - LATENCY_ALPHA) + ms * LATENCY_ALPHA
                };
            }
            Outcome::Failed | Outcome::NoReply | Outcome::Error => {
                h.failures_total += 1;
                h.failures += 1.0;
                h.latency_ms = h.latency_ms * (1.0 - LATENCY_ALPHA) + ms * LATENCY_ALPHA;
            }
        }
    }

    /// Its health now, for the API and the metrics.
    pub fn report(&self) -> UpstreamReport {
        let score = self.score(Instant::now());
        let h = self.health.lock().expect("health lock");
        UpstreamReport {
            successes: h.successes,
            failures: h.failures_total,
            latency_ms: h.latency_ms,
            score,
        }
    }
}

/// An upstream's health as reported.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamReport {
    /// Exchanges that gave a usable answer.
    pub successes: u64,
    /// Exchanges that failed, gave no reply or an unusable one.
    pub failures: u64,
    /// Smoothed latency, milliseconds.
    pub latency_ms: f64,
    /// The ranking score (higher is better).
    pub score: f64,
}

/// The upstreams for one route.
#[derive(Debug)]
pub struct UpstreamSet {
    pub upstreams: Vec<std::sync::Arc<Upstream>>,
    last_probe: Mutex<Instant>,
    /// Forwarded queries of this route that ended without a usable answer.
    pub failures: std::sync::atomic::AtomicU64,
}

impl UpstreamSet {
    pub fn new(addrs: &[SocketAddr]) -> Self {
        Self {
            upstreams: addrs
                .iter()
                .map(|a| std::sync::Arc::new(Upstream::new(*a)))
                .collect(),
            last_probe: Mutex::new(Instant::now()),
            failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The upstreams one query goes to: the two best by score (all of them
    /// when there are two or fewer), plus, at most once per
    /// `PROBE_INTERVAL`, the best of the others.
    pub fn pick(&self) -> Vec<std::sync::Arc<Upstream>> {
        let now = Instant::now();
        let mut ranked: Vec<(f64, usize)> = self
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.score(now), i))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut n = ranked.len().min(2);
        if ranked.len() > 2 {
            let mut last = self.last_probe.lock().expect("probe lock");
            if now.saturating_duration_since(*last) >= PROBE_INTERVAL {
                *last = now;
                n = 3;
            }
        }
        ranked[..n]
            .iter()
            .map(|(_, i)| self.upstreams[*i].clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u16) -> UpstreamSet {
        let addrs: Vec<SocketAddr> = (1..=n)
            .map(|i| SocketAddr::from(([192, 0, 2, i as u8], 53)))
            .collect();
        UpstreamSet::new(&addrs)
    }

    #[test]
    fn two_or_fewer_are_all_used() {
        assert_eq!(set(1).pick().len(), 1);
        assert_eq!(set(2).pick().len(), 2);
    }

    #[test]
    fn a_failing_upstream_drops_out_of_the_best_two() {
        let s = set(3);
        *s.last_probe.lock().unwrap() = Instant::now();
        for _ in 0..3 {
            s.upstreams[0].record(Outcome::NoReply, Duration::from_secs(2));
        }
        s.upstreams[1].record(Outcome::Usable, Duration::from_millis(1));
        s.upstreams[2].record(Outcome::Usable, Duration::from_millis(2));
        let picked: Vec<SocketAddr> = s.pick().iter().map(|u| u.addr).collect();
        assert_eq!(picked, vec![s.upstreams[1].addr, s.upstreams[2].addr]);
    }

    #[test]
    fn a_probe_goes_to_a_third_upstream_now_and_then() {
        let s = set(4);
        *s.last_probe.lock().unwrap() = Instant::now() - PROBE_INTERVAL;
        assert_eq!(s.pick().len(), 3);
        assert_eq!(s.pick().len(), 2, "no second probe within the interval");
    }

    #[test]
    fn an_upstream_that_piles_up_outstanding_queries_drops_out_at_once() {
        let s = set(3);
        *s.last_probe.lock().unwrap() = Instant::now();
        s.upstreams[0]
            .outstanding
            .store(50, std::sync::atomic::Ordering::Relaxed);
        let picked: Vec<SocketAddr> = s.pick().iter().map(|u| u.addr).collect();
        assert!(!picked.contains(&s.upstreams[0].addr), "{picked:?}");
    }

    #[test]
    fn failures_decay() {
        let u = Upstream::new(SocketAddr::from(([192, 0, 2, 1], 53)));
        u.record(Outcome::NoReply, Duration::from_millis(0));
        let now = Instant::now();
        let fresh = u.score(now);
        let later = u.score(now + FAILURE_HALF_LIFE * 4);
        assert!(fresh > 900.0, "{fresh}");
        assert!(later < fresh / 10.0, "{later}");
    }
}
