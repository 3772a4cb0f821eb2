//! The racing forwarder: each query goes to two upstreams at once (all of
//! them when there are two or fewer) and the first usable answer wins.

mod exchange;
pub mod upstream;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{LowerName, Name},
};
use tokio::{sync::mpsc, time::Instant};
use upstream::{Outcome, Upstream, UpstreamSet};

use crate::{
    config::Config,
    dns::Transport,
    stats::{Source, Stats},
};

/// Where a name goes.
pub struct Routes {
    resolvers: Arc<UpstreamSet>,
    masters: Arc<UpstreamSet>,
    /// Forward zones, longest first.
    zones: Vec<(LowerName, Arc<UpstreamSet>)>,
}

pub struct Forwarder {
    routes: RwLock<Arc<Routes>>,
    mesos_port: u16,
    upstream_timeout: Duration,
    deadline: Duration,
    stats: Arc<Stats>,
}

fn mesos_zone() -> LowerName {
    LowerName::new(&Name::from_ascii("mesos.").expect("static name"))
}

impl Forwarder {
    pub fn new(config: &Config, masters: &[Ipv4Addr], stats: Arc<Stats>) -> Self {
        let mut zones: Vec<(LowerName, Arc<UpstreamSet>)> = config
            .forward_zones
            .iter()
            .map(|(zone, servers)| {
                let name = Name::from_ascii(format!("{zone}.")).expect("validated zone name");
                (LowerName::new(&name), Arc::new(UpstreamSet::new(servers)))
            })
            .collect();
        zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.num_labels()));
        let masters: Vec<SocketAddr> = masters
            .iter()
            .map(|m| SocketAddr::from((*m, config.mesos_port)))
            .collect();
        Self {
            routes: RwLock::new(Arc::new(Routes {
                resolvers: Arc::new(UpstreamSet::new(&config.upstream_resolvers)),
                masters: Arc::new(UpstreamSet::new(&masters)),
                zones,
            })),
            mesos_port: config.mesos_port,
            upstream_timeout: config.upstream_timeout,
            deadline: config.query_deadline,
            stats,
        }
    }

    /// Takes new resolvers and forward zones from a reloaded configuration;
    /// the masters stay. Queries in flight finish on the routes they had.
    pub fn reconfigure(&self, config: &Config) {
        let fresh = Self::new(config, &[], self.stats.clone());
        let fresh_routes = fresh.routes.read().expect("routes lock").clone();
        let mut routes = self.routes.write().expect("routes lock");
        *routes = Arc::new(Routes {
            resolvers: fresh_routes.resolvers.clone(),
            masters: routes.masters.clone(),
            zones: fresh_routes.zones.clone(),
        });
    }

    /// Points `*.mesos` at a new master list.
    pub fn set_masters(&self, masters: &[Ipv4Addr]) {
        let addrs: Vec<SocketAddr> = masters
            .iter()
            .map(|m| SocketAddr::from((*m, self.mesos_port)))
            .collect();
        let mut routes = self.routes.write().expect("routes lock");
        let new = Routes {
            resolvers: routes.resolvers.clone(),
            masters: Arc::new(UpstreamSet::new(&addrs)),
            zones: routes.zones.clone(),
        };
        *routes = Arc::new(new);
    }

    /// The upstreams for `name`: `*.mesos` to the masters, a forward zone
    /// by longest suffix, anything else to the resolvers.
    pub fn route(&self, name: &LowerName) -> Arc<UpstreamSet> {
        let routes = self.routes.read().expect("routes lock").clone();
        if mesos_zone().zone_of(name) {
            return routes.masters.clone();
        }
        for (zone, set) in &routes.zones {
            if zone.zone_of(name) {
                return set.clone();
            }
        }
        routes.resolvers.clone()
    }

    /// Every route with its name, for reporting.
    pub fn all_routes(&self) -> Vec<(String, Arc<UpstreamSet>)> {
        let routes = self.routes.read().expect("routes lock").clone();
        let mut out = vec![
            ("resolvers".to_string(), routes.resolvers.clone()),
            ("mesos".to_string(), routes.masters.clone()),
        ];
        for (zone, set) in &routes.zones {
            out.push((zone.to_string(), set.clone()));
        }
        out
    }

    /// Every upstream of every route, for reporting.
    pub fn all_upstreams(&self) -> Vec<(String, Arc<Upstream>)> {
        let routes = self.routes.read().expect("routes lock").clone();
        let mut out = Vec::new();
        for u in &routes.resolvers.upstreams {
            out.push(("resolvers".to_string(), u.clone()));
        }
        for u in &routes.masters.upstreams {
            out.push(("mesos".to_string(), u.clone()));
        }
        for (zone, set) in &routes.zones {
            for u in &set.upstreams {
                out.push((zone.to_string(), u.clone()));
            }
        }
        out
    }

    /// Forwards `query` (whose bytes are `wire`) and returns the reply for
    /// the client: the winning upstream reply with the client's ID, or, when
    /// every upstream failed, one of their replies or a SERVFAIL we make.
    pub async fn forward(&self, query: &Message, wire: &[u8], transport: Transport) -> Vec<u8> {
        let question = query.queries()[0].clone();
        let max_reply = exchange::max_udp_reply(query);
        let set = self.route(&LowerName::new(question.name()));
        let chosen = set.pick();
        let overall = Instant::now() + self.deadline;
        let (tx, mut rx) = mpsc::channel::<(Outcome, Option<Vec<u8>>)>(chosen.len().max(1));
        for upstream in chosen {
            let tx = tx.clone();
            let wire = wire.to_vec();
            let question = question.clone();
            let stats = self.stats.clone();
            let per_upstream = (Instant::now() + self.upstream_timeout).min(overall);
            // Each exchange runs to its own end even after another won, so
            // that a late reply still updates the loser's score.
            upstream
                .outstanding
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let started = Instant::now();
                let result = match transport {
                    Transport::Udp => {
                        exchange::udp(
                            upstream.addr,
                            &wire,
                            &question,
                            max_reply,
                            per_upstream,
                            &stats,
                        )
                        .await
                    }
                    Transport::Tcp => {
                        exchange::tcp(upstream.addr, &wire, &question, per_upstream, &stats).await
                    }
                };
                let (outcome, reply) = match result {
                    Ok(reply) => {
                        // NOERROR (0) or NXDOMAIN (3) in the header's RCODE.
                        let rcode = ResponseCode::from_low(reply[3] & 0x0f);
                        let usable =
                            matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain);
                        let outcome = if usable {
                            Outcome::Usable
                        } else {
                            Outcome::Failed
                        };
                        (outcome, Some(reply))
                    }
                    Err(exchange::ExchangeError::Timeout) => {
                        Stats::inc(&stats.upstream_timeouts);
                        (Outcome::NoReply, None)
                    }
                    Err(_) => {
                        Stats::inc(&stats.upstream_errors);
                        (Outcome::Error, None)
                    }
                };
                upstream.record(outcome, started.elapsed());
                upstream
                    .outstanding
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                let _ = tx.send((outcome, reply)).await;
            });
        }
        drop(tx);
        let mut fallback: Option<Vec<u8>> = None;
        loop {
            match tokio::time::timeout_at(overall, rx.recv()).await {
                Ok(Some((Outcome::Usable, Some(reply)))) => {
                    Stats::inc(&self.stats.answered_upstream);
                    self.stats
                        .breakdown
                        .answer(Source::Upstream, (reply[3] & 0x0f) as u16);
                    return exchange::with_id(&reply, query.id());
                }
                Ok(Some((_, Some(reply)))) => {
                    fallback.get_or_insert(reply);
                }
                Ok(Some((_, None))) => {}
                Ok(None) | Err(_) => break,
            }
        }
        set.failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(reply) = fallback {
            Stats::inc(&self.stats.answered_upstream);
            self.stats
                .breakdown
                .answer(Source::Upstream, (reply[3] & 0x0f) as u16);
            return exchange::with_id(&reply, query.id());
        }
        Stats::inc(&self.stats.servfail_generated);
        self.stats.breakdown.answer(Source::Generated, 2);
        crate::dns::servfail(query)
    }
}
