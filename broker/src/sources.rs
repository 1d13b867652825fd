//! Connections counted per source address, so that one address cannot hold every slot of a
//! listener (a slow-request flood on the HTTP port, idle sockets on the MQTT ports).
//!
//! A source is an IPv4 address, or an IPv6 /64: one IPv6 host usually owns a whole /64,
//! so counting single IPv6 addresses would count nothing. The table holds one entry per
//! source with a connection open, so it is bounded by the connections themselves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// The address limits are counted against: IPv4 as it is (also when mapped into IPv6),
/// IPv6 cut to its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Open connections per source, at most `max` each.
#[derive(Debug)]
pub struct PerSource {
    /// 0: no limit (nothing is counted).
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its source until dropped.
#[derive(Debug)]
pub struct SourceHold {
    table: Option<(Arc<PerSource>, IpAddr)>,
}

impl PerSource {
    /// A table allowing `max` connections per source; 0 allows any number.
    pub fn new(max: usize) -> Arc<PerSource> {
        Arc::new(PerSource {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection from `ip`, or None when its source has `max` open.
    pub fn try_hold(self: &Arc<Self>, ip: IpAddr) -> Option<SourceHold> {
        if self.max == 0 {
            return Some(SourceHold { table: None });
        }
        let key = source_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceHold {
            table: Some((Arc::clone(self), key)),
        })
    }

    /// Connections open from `ip`'s source.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&source_key(ip)).copied().unwrap_or(0)
    }

    /// Sources with a connection open.
    pub fn sources(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for SourceHold {
    fn drop(&mut self) {
        let Some((table, key)) = self.table.take() else {
            return;
        };
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(source_key(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(source_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(source_key(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn a_source_holds_at_most_max_and_gets_them_back_on_drop() {
        let t = PerSource::new(2);
        let a = t.try_hold(ip("10.0.0.1")).expect("first");
        let _b = t.try_hold(ip("10.0.0.1")).expect("second");
        assert!(t.try_hold(ip("10.0.0.1")).is_none());
        assert!(
            t.try_hold(ip("10.0.0.2")).is_some(),
            "others are not affected"
        );
        drop(a);
        assert_eq!(t.open_from(ip("10.0.0.1")), 1);
        assert!(t.try_hold(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn entries_go_with_their_last_connection_and_zero_means_no_limit() {
        let t = PerSource::new(1);
        drop(t.try_hold(ip("10.0.0.1")));
        assert_eq!(t.sources(), 0);
        let unlimited = PerSource::new(0);
        let held: Vec<_> = (0..100)
            .map(|_| unlimited.try_hold(ip("10.0.0.1")).expect("no limit"))
            .collect();
        assert_eq!(held.len(), 100);
        assert_eq!(unlimited.sources(), 0, "nothing counted");
    }
}
