//! The in-flight budget of forwarded queries, shared fairly: one client
//! (by source address) may hold at most its share, so that a flood of
//! misses from one container costs the others nothing. The upstreams'
//! share is checked where they are picked (see `Forwarder`).

use std::{collections::HashMap, net::IpAddr};

use crate::stats::DropReason;

/// The limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Forwarded queries awaiting their answer, in all.
    pub max_in_flight: usize,
    /// ... of which one client may hold.
    pub per_client: usize,
    /// Outstanding exchanges one upstream may hold.
    pub per_upstream: usize,
}

#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    total: usize,
    by_client: HashMap<IpAddr, usize, foldhash::quality::RandomState>,
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            total: 0,
            by_client: HashMap::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes one unit of the budget for `client`, or says why not.
    pub fn admit(&mut self, client: IpAddr) -> Result<(), DropReason> {
        if self.total >= self.limits.max_in_flight {
            return Err(DropReason::Overload);
        }
        let held = self.by_client.entry(client).or_insert(0);
        if *held >= self.limits.per_client {
            return Err(DropReason::ClientShare);
        }
        *held += 1;
        self.total += 1;
        Ok(())
    }

    /// Gives back what [`Self::admit`] took.
    pub fn release(&mut self, client: IpAddr) {
        if let Some(held) = self.by_client.get_mut(&client) {
            *held -= 1;
            if *held == 0 {
                self.by_client.remove(&client);
            }
            self.total -= 1;
        }
    }

    pub fn in_flight(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn one_client_cannot_take_the_whole_budget() {
        let mut a = Admission::new(Limits {
            max_in_flight: 10,
            per_client: 4,
            per_upstream: 5,
        });
        for _ in 0..4 {
            a.admit(ip(1)).unwrap();
        }
        assert_eq!(a.admit(ip(1)), Err(DropReason::ClientShare));
        for _ in 0..4 {
            a.admit(ip(2)).unwrap();
        }
        a.admit(ip(3)).unwrap();
        a.admit(ip(3)).unwrap();
        assert_eq!(a.admit(ip(4)), Err(DropReason::Overload));
        a.release(ip(1));
        a.admit(ip(4)).unwrap();
        assert_eq!(a.in_flight(), 10);
        for _ in 0..3 {
            a.release(ip(1));
        }
        assert!(
            !a.by_client.contains_key(&ip(1)),
            "an idle client costs no memory"
        );
    }
}
