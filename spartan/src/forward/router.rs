//! Where a name goes: `*.mesos` to the masters, a forward zone by longest
//! suffix, anything else to the resolvers. Shared between the DNS thread
//! (one read per query) and the control plane (reloads, new masters,
//! reporting).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use hickory_proto::rr::{LowerName, Name};

use super::upstream::{Upstream, UpstreamSet};
use crate::config::Config;

/// One version of the routes; queries in flight keep the one they started on.
pub struct Routes {
    pub resolvers: Arc<UpstreamSet>,
    pub masters: Arc<UpstreamSet>,
    /// Forward zones, longest first.
    pub zones: Vec<(LowerName, Arc<UpstreamSet>)>,
    pub upstream_timeout: Duration,
}

pub struct Router {
    routes: RwLock<Arc<Routes>>,
    mesos_port: u16,
    mesos: LowerName,
}

fn forward_zones(config: &Config) -> Vec<(LowerName, Arc<UpstreamSet>)> {
    let mut zones: Vec<(LowerName, Arc<UpstreamSet>)> = config
        .forward_zones
        .iter()
        .map(|(zone, servers)| {
            let name = Name::from_ascii(format!("{zone}.")).expect("validated zone name");
            (LowerName::new(&name), Arc::new(UpstreamSet::new(servers)))
        })
        .collect();
    zones.sort_by_key(|(z, _)| std::cmp::Reverse(z.num_labels()));
    zones
}

impl Router {
    pub fn new(config: &Config, masters: &[Ipv4Addr]) -> Self {
        let mesos_port = config.mesos_port;
        Self {
            routes: RwLock::new(Arc::new(Routes {
                resolvers: Arc::new(UpstreamSet::new(&config.upstream_resolvers)),
                masters: Arc::new(UpstreamSet::new(&master_addrs(masters, mesos_port))),
                zones: forward_zones(config),
                upstream_timeout: config.upstream_timeout,
            })),
            mesos_port,
            mesos: LowerName::new(&Name::from_ascii("mesos.").expect("static name")),
        }
    }

    /// The routes as they are now.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.read().expect("routes lock").clone()
    }

    /// Takes new resolvers, forward zones and timeout from a reloaded
    /// configuration; the masters stay.
    pub fn reconfigure(&self, config: &Config) {
        let mut routes = self.routes.write().expect("routes lock");
        *routes = Arc::new(Routes {
            resolvers: Arc::new(UpstreamSet::new(&config.upstream_resolvers)),
            masters: routes.masters.clone(),
            zones: forward_zones(config),
            upstream_timeout: config.upstream_timeout,
        });
    }

    /// Points `*.mesos` at a new master list.
    pub fn set_masters(&self, masters: &[Ipv4Addr]) {
        let set = Arc::new(UpstreamSet::new(&master_addrs(masters, self.mesos_port)));
        let mut routes = self.routes.write().expect("routes lock");
        *routes = Arc::new(Routes {
            resolvers: routes.resolvers.clone(),
            masters: set,
            zones: routes.zones.clone(),
            upstream_timeout: routes.upstream_timeout,
        });
    }

    /// The upstreams for `name` in `routes`.
    pub fn route(&self, routes: &Routes, name: &LowerName) -> Arc<UpstreamSet> {
        if self.mesos.zone_of(name) {
            return routes.masters.clone();
        }
        routes
            .zones
            .iter()
            .find(|(zone, _)| zone.zone_of(name))
            .map_or_else(|| routes.resolvers.clone(), |(_, set)| set.clone())
    }

    /// Every route with its name, for reporting.
    pub fn all_routes(&self) -> Vec<(String, Arc<UpstreamSet>)> {
        let routes = self.routes();
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
        self.all_routes()
            .into_iter()
            .flat_map(|(route, set)| {
                set.upstreams
                    .iter()
                    .map(|u| (route.clone(), u.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn master_addrs(masters: &[Ipv4Addr], port: u16) -> Vec<SocketAddr> {
    masters
        .iter()
        .map(|m| SocketAddr::from((*m, port)))
        .collect()
}
