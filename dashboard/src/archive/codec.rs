//! A stored record's bytes: a head (format, topic), then segments, each a point count and
//! either an absolute first point or a continuation of the record's last point, then
//! varint deltas. Decoding never panics: a damaged record yields what precedes the damage.

use crate::history::Abs;

/// The record layout this build writes.
const FORMAT: u8 = 1;
/// A segment whose first point is absolute.
const ABSOLUTE: u8 = 0;
/// A segment continuing from the record's last point.
const CONTINUES: u8 = 1;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(out: &mut Vec<u8>, v: i64) {
    varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// A new record's head.
pub(super) fn head(topic: &str) -> Vec<u8> {
    let mut out = vec![FORMAT];
    varint(&mut out, topic.len() as u64);
    out.extend_from_slice(topic.as_bytes());
    out
}

fn delta(out: &mut Vec<u8>, from: Abs, to: Abs) {
    varint(out, to.t.saturating_sub(from.t));
    zigzag(out, i64::from(to.lat) - i64::from(from.lat));
    zigzag(out, i64::from(to.lon) - i64::from(from.lon));
    out.extend_from_slice(&[to.tag, to.heading]);
}

/// A segment of `points` (oldest first, not older than `after` when given): deltas from
/// `after`, the record's last point, or an absolute first point.
pub(super) fn segment(after: Option<Abs>, points: &[Abs]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + points.len() * 9);
    let mut prev = match (after, points.first()) {
        (Some(a), _) => {
            out.push(CONTINUES);
            varint(&mut out, points.len() as u64);
            a
        }
        (None, Some(first)) => {
            out.push(ABSOLUTE);
            varint(&mut out, points.len() as u64);
            varint(&mut out, first.t);
            zigzag(&mut out, i64::from(first.lat));
            zigzag(&mut out, i64::from(first.lon));
            out.extend_from_slice(&[first.tag, first.heading]);
            *first
        }
        (None, None) => return out,
    };
    let rest = if after.is_some() {
        points
    } else {
        &points[1..]
    };
    for p in rest {
        delta(&mut out, prev, *p);
        prev = *p;
    }
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn coord(&mut self, base: i32) -> Option<i32> {
        i32::try_from(i64::from(base).checked_add(self.zigzag()?)?).ok()
    }

    fn point(&mut self, prev: Abs) -> Option<Abs> {
        Some(Abs {
            t: prev.t.checked_add(self.varint()?)?,
            lat: self.coord(prev.lat)?,
            lon: self.coord(prev.lon)?,
            tag: self.byte()?,
            heading: self.byte()?,
        })
    }
}

/// The record's topic and points (None and nothing for a record of another format).
pub(super) fn decode(bytes: &[u8]) -> (Option<String>, Vec<Abs>) {
    let mut r = Reader { bytes, at: 0 };
    if r.byte() != Some(FORMAT) {
        return (None, Vec::new());
    }
    let topic = (|| {
        let len = usize::try_from(r.varint()?).ok()?;
        let raw = bytes.get(r.at..r.at.checked_add(len)?)?;
        r.at += len;
        String::from_utf8(raw.to_vec()).ok()
    })();
    let Some(topic) = topic else {
        return (None, Vec::new());
    };
    let mut points: Vec<Abs> = Vec::new();
    let zero = Abs {
        t: 0,
        lat: 0,
        lon: 0,
        tag: 0,
        heading: 0,
    };
    while r.at < bytes.len() {
        let Some(kind) = r.byte() else { break };
        let Some(n) = r.varint() else { break };
        let mut prev = match (kind, points.last()) {
            (CONTINUES, Some(last)) => *last,
            (ABSOLUTE, _) => match r.point(zero) {
                Some(first) => {
                    points.push(first);
                    first
                }
                None => break,
            },
            _ => break,
        };
        let deltas = if kind == ABSOLUTE {
            n.saturating_sub(1)
        } else {
            n
        };
        for _ in 0..deltas {
            let Some(p) = r.point(prev) else {
                return (Some(topic), points);
            };
            points.push(p);
            prev = p;
        }
    }
    (Some(topic), points)
}
