//! Why a driver's connection failed, in a few kinds an operator can act on, counted per
//! kind and logged so a fleet that cannot connect says why instead of publishing nothing
//! in silence: the first failure of each kind at WARN with the broker and the reason, then
//! at most one WARN per kind every [`WARN_EVERY_S`] seconds with the count since.

use rumqttc::{ConnectReturnCode, ConnectionError};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::warn;

/// Seconds between two WARN lines of one kind.
pub const WARN_EVERY_S: u64 = 10;

/// A kind of connection failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens at the address (TCP connection refused).
    Unreachable,
    /// The broker refused the credentials or the client id (CONNACK 4 or 5).
    NotAuthorized,
    /// The broker refused for another reason (CONNACK 1, 2 or 3: version, id, unavailable).
    Refused,
    /// The TLS handshake failed (unknown CA, wrong host, TLS against a plain port).
    Tls,
    /// The connection timed out.
    Timeout,
    /// The connection was closed or reset by the broker or the network.
    Closed,
}

impl Failure {
    /// Every kind, in the order of [`Failure::label`]s in summaries.
    pub const ALL: [Failure; 6] = [
        Failure::Unreachable,
        Failure::NotAuthorized,
        Failure::Refused,
        Failure::Tls,
        Failure::Timeout,
        Failure::Closed,
    ];

    /// The label in summaries and logs.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::NotAuthorized => "not_authorized",
            Failure::Refused => "refused",
            Failure::Tls => "tls",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
        }
    }

    /// The kind of a rumqttc connection error.
    pub fn of(error: &ConnectionError) -> Failure {
        match error {
            ConnectionError::ConnectionRefused(
                ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
            ) => Failure::NotAuthorized,
            ConnectionError::ConnectionRefused(_) | ConnectionError::NotConnAck(_) => {
                Failure::Refused
            }
            ConnectionError::Tls(_) => Failure::Tls,
            ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => Failure::Timeout,
            ConnectionError::Io(e) => match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Failure::Unreachable,
                std::io::ErrorKind::TimedOut => Failure::Timeout,
                // rustls reports a handshake that failed as InvalidData.
                std::io::ErrorKind::InvalidData => Failure::Tls,
                _ => Failure::Closed,
            },
            _ => Failure::Closed,
        }
    }

    fn index(self) -> usize {
        Failure::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

/// Failures per kind, and when each kind was last logged.
#[derive(Debug, Default)]
pub struct Failures {
    counts: [AtomicU64; 6],
    /// Unix seconds of the last WARN per kind (0: never).
    warned_at: [AtomicU64; 6],
    /// Count of the kind when it was last logged.
    warned_count: [AtomicU64; 6],
}

impl Failures {
    /// Counts `error` for the driver `id` of broker `broker`, and logs it when its kind is
    /// due a line (`now_s`: unix seconds).
    pub fn record(&self, broker: &str, id: &str, error: &ConnectionError, now_s: u64) {
        let kind = Failure::of(error);
        let i = kind.index();
        let count = self.counts[i].fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.warned_at[i].load(Ordering::Relaxed);
        let due = last == 0 || now_s >= last + WARN_EVERY_S;
        if due
            && self.warned_at[i]
                .compare_exchange(last, now_s.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let before = self.warned_count[i].swap(count, Ordering::Relaxed);
            if before == 0 {
                warn!(%broker, driver = %id, reason = kind.label(), error = %error, "driver cannot connect");
            } else {
                warn!(%broker, reason = kind.label(), error = %error, failures = count - before, "more drivers could not connect (logged at most every {WARN_EVERY_S} s per reason)");
            }
        }
    }

    /// (kind, count) of every kind seen so far.
    pub fn counts(&self) -> Vec<(Failure, u64)> {
        Failure::ALL
            .iter()
            .map(|k| (*k, self.counts[k.index()].load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// `not_authorized=200 unreachable=3`, or empty when nothing failed.
    pub fn summary(&self) -> String {
        self.counts()
            .iter()
            .map(|(k, n)| format!("{}={n}", k.label()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_fall_into_kinds_and_are_counted() {
        let f = Failures::default();
        let refused = ConnectionError::Io(std::io::ErrorKind::ConnectionRefused.into());
        let denied = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        let bad_pass = ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword);
        let busy = ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable);
        assert_eq!(Failure::of(&refused), Failure::Unreachable);
        assert_eq!(Failure::of(&denied), Failure::NotAuthorized);
        assert_eq!(Failure::of(&bad_pass), Failure::NotAuthorized);
        assert_eq!(Failure::of(&busy), Failure::Refused);
        assert_eq!(
            Failure::of(&ConnectionError::NetworkTimeout),
            Failure::Timeout
        );
        for (i, e) in [&refused, &denied, &bad_pass, &busy]
            .into_iter()
            .enumerate()
        {
            f.record("mqtt://127.0.0.1:1", "drv-1", e, 100 + i as u64);
        }
        assert_eq!(f.summary(), "unreachable=1 not_authorized=2 refused=1");
    }
}
