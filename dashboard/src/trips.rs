//! When a driver last entered each status: what ends a share link made "until the driver
//! is available" (the rider's trip is over), even when a later trip has begun since.
//!
//! Times are the board's receive clock (ms since the epoch), not the device's `ts`, so a
//! phone with a wrong clock cannot keep a link alive. A driver first seen by this process
//! counts as entering its status then: after a restart, a link whose driver is already in
//! its ending status ends (the safe side for the rider's privacy is the driver's).

use fleetcast_proto::location::Status;

/// Last entry time per status (0: never seen entering it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusTimes([u64; 3]);

fn slot(s: Status) -> usize {
    match s {
        Status::Available => 0,
        Status::ToPickup => 1,
        Status::OnTrip => 2,
    }
}

impl StatusTimes {
    /// A driver first seen in `status` at `now_ms`.
    pub fn first(status: Status, now_ms: u64) -> StatusTimes {
        let mut t = StatusTimes::default();
        t.0[slot(status)] = now_ms;
        t
    }

    /// A fix in `after` following one in `before`, received at `now_ms`.
    pub fn observe(&mut self, before: Status, after: Status, now_ms: u64) {
        if before != after {
            self.0[slot(after)] = now_ms;
        }
    }

    /// Whether it entered `status` at or after `since_ms`.
    pub fn since(&self, status: Status, since_ms: u64) -> bool {
        let at = self.0[slot(status)];
        at != 0 && at >= since_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_counts_staying_does_not() {
        let mut t = StatusTimes::first(Status::Available, 1_000);
        // A link made at 2 s while the driver waits: not ended by the wait.
        t.observe(Status::Available, Status::Available, 3_000);
        assert!(!t.since(Status::Available, 2_000));
        t.observe(Status::Available, Status::ToPickup, 4_000);
        t.observe(Status::ToPickup, Status::OnTrip, 5_000);
        assert!(!t.since(Status::Available, 2_000));
        // Trip over: ended, and stays ended when the next trip begins.
        t.observe(Status::OnTrip, Status::Available, 6_000);
        t.observe(Status::Available, Status::ToPickup, 7_000);
        assert!(t.since(Status::Available, 2_000));
        assert!(!t.since(Status::Available, 6_001));
    }
}
