//! A strict, allocation-free reader for the shape drivers actually send: one flat JSON object
//! of the documented fields, plain numbers, strings without escapes.
//!
//! Every position crosses the gateway's check and the board's, so this is the hottest parser
//! in the broker; serde_json with a derived `Location` spent about a fifth of the 1 -> 1
//! benchmark's samples matching keys and allocating the id. This reader answers `None`
//! whenever it is not certain it reads the payload exactly as serde_json would (an escape, an
//! exponent, a nested value, a duplicate key, more digits than a `u64` holds, anything
//! unexpected), and the caller then asks serde_json. So `Some` is always serde_json's answer,
//! bit for bit (the tests compare the two on random and mutated payloads), and `None` costs
//! one extra pass.

use super::Status;

/// The fields of a fix with its id borrowed, from a payload (read in place) or from a
/// [`Location`](super::Location) ([`Location::fields`](super::Location::fields)).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Fields<'a> {
    /// As [`Location::id`](super::Location::id).
    pub id: &'a str,
    /// As [`Location::lat`](super::Location::lat).
    pub lat: f64,
    /// As [`Location::lon`](super::Location::lon).
    pub lon: f64,
    /// As [`Location::heading`](super::Location::heading).
    pub heading: f64,
    /// As [`Location::speed`](super::Location::speed).
    pub speed: f64,
    /// As [`Location::accuracy`](super::Location::accuracy).
    pub accuracy: f64,
    /// As [`Location::status`](super::Location::status).
    pub status: Status,
    /// As [`Location::seq`](super::Location::seq).
    pub seq: u64,
    /// As [`Location::ts`](super::Location::ts).
    pub ts: u64,
}

/// The exact powers of ten serde_json divides by (its table holds the same values).
const POW10: [f64; 20] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19,
];

/// Digits a `u64` significand always holds (10^19 - 1 < 2^64).
const MAX_DIGITS: usize = 19;

/// Which known key each bit of `seen` stands for.
const ID: u16 = 1 << 0;
const LAT: u16 = 1 << 1;
const LON: u16 = 1 << 2;
const HEADING: u16 = 1 << 3;
const SPEED: u16 = 1 << 4;
const ACCURACY: u16 = 1 << 5;
const STATUS: u16 = 1 << 6;
const SEQ: u16 = 1 << 7;
const TS: u16 = 1 << 8;
const ALL: u16 = (1 << 9) - 1;

/// Reads `payload` if it has the common shape; `None` means "ask serde_json".
pub(super) fn fields(payload: &[u8]) -> Option<Fields<'_>> {
    let mut c = Cursor { b: payload, i: 0 };
    let mut f = Fields {
        id: "",
        lat: 0.0,
        lon: 0.0,
        heading: 0.0,
        speed: 0.0,
        accuracy: 0.0,
        status: Status::Available,
        seq: 0,
        ts: 0,
    };
    let mut seen = 0u16;
    c.ws();
    c.eat(b'{')?;
    loop {
        c.ws();
        let key = c.string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        let bit = match key {
            b"id" => {
                f.id = std::str::from_utf8(c.string()?).ok()?;
                ID
            }
            b"status" => {
                f.status = match c.string()? {
                    b"available" => Status::Available,
                    b"to_pickup" => Status::ToPickup,
                    b"on_trip" => Status::OnTrip,
                    _ => return None,
                };
                STATUS
            }
            b"seq" => {
                f.seq = c.uint()?;
                SEQ
            }
            b"ts" => {
                f.ts = c.uint()?;
                TS
            }
            _ => match float_slot(&mut f, key) {
                Some((bit, slot)) => {
                    *slot = c.float()?;
                    bit
                }
                None => {
                    // serde ignores unknown keys whatever their value; only scalars here.
                    std::str::from_utf8(key).ok()?;
                    c.scalar()?;
                    0
                }
            },
        };
        if seen & bit != 0 {
            // serde refuses a duplicate field.
            return None;
        }
        seen |= bit;
        c.ws();
        match c.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    c.ws();
    (c.i == c.b.len() && seen == ALL).then_some(f)
}

/// The number field `key` names: its bit in `seen` and where it goes.
fn float_slot<'f>(f: &'f mut Fields<'_>, key: &[u8]) -> Option<(u16, &'f mut f64)> {
    Some(match key {
        b"lat" => (LAT, &mut f.lat),
        b"lon" => (LON, &mut f.lon),
        b"heading" => (HEADING, &mut f.heading),
        b"speed" => (SPEED, &mut f.speed),
        b"accuracy" => (ACCURACY, &mut f.accuracy),
        _ => return None,
    })
}

/// Non-zero when one of the eight bytes of `word` is a quote, a backslash or a control
/// character (the classic "has a zero byte" bit trick, applied three times).
fn special(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    zero(word ^ (ONES * u64::from(b'"')))
        | zero(word ^ (ONES * u64::from(b'\\')))
        | (word.wrapping_sub(ONES * 0x20) & !word & HIGH)
}

/// The value of eight ASCII digits, or None when a byte of `chunk` is not one (simdjson's
/// "parse eight digits" bit trick, on a little-endian load).
#[inline]
fn eight_digits(chunk: &[u8]) -> Option<u64> {
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    let w = u64::from_le_bytes(word);
    // Each byte's high nibble is 3, and still 3 once 6 is added (so its low nibble <= 9).
    let high = |v: u64| v & 0xF0F0_F0F0_F0F0_F0F0;
    if high(w) | (high(w.wrapping_add(0x0606_0606_0606_0606)) >> 4) != 0x3333_3333_3333_3333 {
        return None;
    }
    let mut v = w - 0x3030_3030_3030_3030;
    // Pairs, then fours, then the eight: the first digit is the lowest byte.
    v = v.wrapping_mul(10).wrapping_add(v >> 8);
    let pairs = 0x0000_00FF_0000_00FF;
    v = (v & pairs)
        .wrapping_mul(100 + (1_000_000 << 32))
        .wrapping_add(((v >> 16) & pairs).wrapping_mul(1 + (10_000 << 32)))
        >> 32;
    Some(v)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// JSON's whitespace, as serde_json skips it.
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters; its bytes between the quotes.
    /// Eight bytes at a time (serde_json's own trick): a padded id or a long unknown
    /// value is most of a payload's bytes.
    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = self.b.get(start..)?;
        let mut chunks = rest.chunks_exact(8);
        let mut at = 0;
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if special(u64::from_le_bytes(word)) != 0 {
                break;
            }
            at += 8;
        }
        for (k, &c) in rest.iter().enumerate().skip(at) {
            match c {
                b'"' => {
                    self.i = start + k + 1;
                    return Some(&rest[..k]);
                }
                b'\\' | 0..=0x1f => return None,
                _ => {}
            }
        }
        None
    }

    /// Digits from here: (value, how many). `None` past [`MAX_DIGITS`] in all.
    #[inline]
    fn digits(&mut self, mut value: u64, mut count: usize) -> Option<(u64, usize)> {
        // Eight at a time while eight digits follow and fit: a coordinate or a millisecond
        // timestamp is 13-17 digits, and one by one they were a third of the reader's time.
        while count + 8 <= MAX_DIGITS {
            let Some(v) = self.b.get(self.i..self.i + 8).and_then(eight_digits) else {
                break;
            };
            // count + 8 <= 19 digits in all: value * 10^8 + v < 10^19 < 2^64.
            value = value * 100_000_000 + v;
            count += 8;
            self.i += 8;
        }
        while let Some(c @ b'0'..=b'9') = self.peek() {
            count += 1;
            if count > MAX_DIGITS {
                return None;
            }
            value = value * 10 + u64::from(c - b'0');
            self.i += 1;
        }
        Some((value, count))
    }

    /// An integer part: one digit at least, no leading zero.
    #[inline]
    fn integer(&mut self) -> Option<(u64, usize)> {
        let first = self.next()?;
        if !first.is_ascii_digit() {
            return None;
        }
        if first == b'0' {
            return match self.peek() {
                Some(b'0'..=b'9') => None,
                _ => Some((0, 1)),
            };
        }
        self.digits(u64::from(first - b'0'), 1)
    }

    /// A number as serde_json reads it into an `f64`, without exponent.
    #[inline]
    fn float(&mut self) -> Option<f64> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let (mut significand, mut count) = self.integer()?;
        let mut fraction = 0;
        if self.peek() == Some(b'.') {
            self.i += 1;
            let before = count;
            (significand, count) = self.digits(significand, count)?;
            fraction = count - before;
            if fraction == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            return None;
        }
        // The same operations as serde_json's f64_from_parts (and, for an integer, its
        // `u64 as f64` or `-(u64 as f64)`), so the same bits.
        let mut f = significand as f64;
        if fraction > 0 {
            f /= POW10[fraction];
        }
        Some(if negative { -f } else { f })
    }

    /// A `u64`: digits only.
    #[inline]
    fn uint(&mut self) -> Option<u64> {
        let (value, _) = self.integer()?;
        match self.peek() {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(value),
        }
    }

    /// Skips an unknown key's value: a string, a number, `true`, `false` or `null`, as
    /// serde_json ignores it.
    fn scalar(&mut self) -> Option<()> {
        let word: &[u8] = match self.peek()? {
            // serde_json does not check that an ignored string is UTF-8.
            b'"' => return self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => return self.float().map(|_| ()),
            b't' => b"true",
            b'f' => b"false",
            b'n' => b"null",
            _ => return None,
        };
        let end = self.i.checked_add(word.len())?;
        if self.b.get(self.i..end)? != word {
            return None;
        }
        self.i = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Location;
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const GOOD: &str = r#"{"id":"drv-000042","lat":60.17012345678901,"lon":-24.9,"heading":90,"speed":0.0,"accuracy":4.25,"status":"on_trip","seq":7,"ts":1700000000000}"#;

    /// What serde_json makes of `payload`.
    fn serde(payload: &[u8]) -> Option<Location> {
        serde_json::from_slice(payload).ok()
    }

    fn same(f: &Fields<'_>, l: &Location) -> bool {
        f.id == l.id
            && f.lat.to_bits() == l.lat.to_bits()
            && f.lon.to_bits() == l.lon.to_bits()
            && f.heading.to_bits() == l.heading.to_bits()
            && f.speed.to_bits() == l.speed.to_bits()
            && f.accuracy.to_bits() == l.accuracy.to_bits()
            && f.status == l.status
            && f.seq == l.seq
            && f.ts == l.ts
    }

    /// The property every caller relies on: `Some` only where serde_json agrees exactly.
    /// Whether the payload was read here.
    fn agrees(payload: &[u8]) -> bool {
        let Some(f) = fields(payload) else {
            return false;
        };
        {
            let l = serde(payload).unwrap_or_else(|| {
                panic!(
                    "scan read what serde refuses: {}",
                    String::from_utf8_lossy(payload)
                )
            });
            assert!(
                same(&f, &l),
                "differs from serde on {}: {f:?} vs {l:?}",
                String::from_utf8_lossy(payload)
            );
        }
        true
    }

    #[test]
    fn reads_the_common_shape() {
        let f = fields(GOOD.as_bytes()).expect("common shape");
        assert_eq!(f.id, "drv-000042");
        assert_eq!(f.status, Status::OnTrip);
        assert_eq!(f.seq, 7);
        assert!(agrees(GOOD.as_bytes()));
        // What the simulator and the load tester send.
        let sim = serde_json::to_vec(&serde(GOOD.as_bytes()).expect("good")).expect("ser");
        assert!(fields(&sim).is_some());
        let probe = GOOD.replace(r#""ts""#, r#""tsu":1700000000000123,"pad":"xxxx","ts""#);
        assert!(agrees(probe.as_bytes()));
        let spaced = " {\n\t\"id\" : \"a\", \"lat\":1 ,\"lon\":2,\"heading\":3,\"speed\":4,\"accuracy\":5,\"status\":\"available\",\"seq\":0,\"ts\":1,\"x\":null,\"y\":true,\"z\":false}\r\n";
        assert!(agrees(spaced.as_bytes()));
    }

    #[test]
    fn eight_digits_reads_eight_digits_only() {
        for n in [
            0u64, 1, 7, 10, 12_345_678, 99_999_999, 10_000_000, 40_302_010,
        ] {
            let text = format!("{n:08}");
            assert_eq!(eight_digits(text.as_bytes()), Some(n), "{text}");
        }
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..100_000 {
            let bytes: [u8; 8] = std::array::from_fn(|_| match rng.random_range(0..4) {
                0 => rng.random(),
                _ => b'0' + rng.random_range(0..10u8),
            });
            let want = bytes
                .iter()
                .all(u8::is_ascii_digit)
                .then(|| bytes.iter().fold(0, |v, &c| v * 10 + u64::from(c - b'0')));
            assert_eq!(eight_digits(&bytes), want, "{bytes:?}");
        }
        // Digits of every length around the eight-at-a-time steps and the 19-digit bound.
        for len in 1..=21 {
            let digits: String = (0..len).map(|k| char::from(b'1' + (k % 9) as u8)).collect();
            let p = GOOD.replace(r#""seq":7"#, &format!(r#""seq":{digits}"#));
            let read = fields(p.as_bytes()).map(|f| f.seq);
            assert_eq!(
                read,
                digits.parse::<u64>().ok().filter(|_| len <= MAX_DIGITS),
                "{len}"
            );
            let p = GOOD.replace("60.17012345678901", &format!("1.{digits}"));
            if len < MAX_DIGITS {
                assert!(agrees(p.as_bytes()), "{p}");
            }
        }
    }

    #[test]
    fn leaves_the_unusual_to_serde() {
        for (from, to) in [
            (r#""drv-000042""#, r#""drv\u002d000042""#),
            (r#""lat":60.17012345678901"#, r#""lat":6.017e1"#),
            (r#""lat":60.17012345678901"#, r#""lat":1e999"#),
            (r#""seq":7"#, r#""seq":7,"seq":8"#),
            (r#""seq":7"#, r#""seq":7.0"#),
            (r#""seq":7"#, r#""seq":-7"#),
            (r#""seq":7"#, r#""seq":18446744073709551615"#),
            (r#""seq":7"#, r#""x":{"a":1},"seq":7"#),
            (r#""seq":7"#, r#""x":[1],"seq":7"#),
            (r#""heading":90"#, r#""heading":090"#),
            (r#""heading":90"#, r#""heading":90."#),
            (r#""heading":90"#, r#""heading":12345678901234567890"#),
            (r#""status":"on_trip""#, r#""status":"busy""#),
            (r#","ts":1700000000000"#, ""),
            ("}", "},"),
            ("}", ",}"),
        ] {
            let p = GOOD.replacen(from, to, 1);
            assert_ne!(p, GOOD, "{from}");
            assert!(fields(p.as_bytes()).is_none(), "{p}");
        }
    }

    #[test]
    fn strings_of_every_length_and_special_place() {
        for n in 0..40 {
            let id = "\u{e9}".to_owned() + &"d".repeat(n);
            let p = GOOD.replacen("drv-000042", &id, 1);
            assert_eq!(fields(p.as_bytes()).map(|f| f.id), Some(id.as_str()));
            let at_id = p.find(&id).expect("id");
            for at in at_id + 2..at_id + id.len() {
                for special in [b'\\', 1, b'\n', 0x1f] {
                    let mut bad = p.clone().into_bytes();
                    bad[at] = special;
                    assert!(fields(&bad).is_none(), "{n} {at}");
                }
            }
        }
        // An unknown value may hold any byte but a quote, a backslash or a control character.
        let mut p = GOOD
            .replacen(
                r#""ts""#,
                r#""pad":"xxxxxxxx\xffxxxxxxxxxxxxxxxxx","ts""#,
                1,
            )
            .into_bytes();
        let at = p.iter().position(|&c| c == b'\\').expect("marker");
        p.splice(at..at + 4, [0xff]);
        assert!(agrees(&p));
    }

    #[test]
    fn numbers_are_serdes_bits() {
        let mut rng = StdRng::seed_from_u64(14);
        for _ in 0..200_000 {
            let int: u64 = match rng.random_range(0..4) {
                0 => 0,
                1 => rng.random_range(0..400),
                2 => rng.random_range(0..1_000_000),
                _ => rng.random(),
            };
            let frac_digits = rng.random_range(0..20);
            let mut s = String::new();
            if rng.random_bool(0.3) {
                s.push('-');
            }
            s.push_str(&int.to_string());
            if frac_digits > 0 {
                s.push('.');
                for _ in 0..frac_digits {
                    s.push(char::from(b'0' + rng.random_range(0..10u8)));
                }
            }
            let p = GOOD.replacen("-24.9", &s, 1);
            let digits = s.bytes().filter(u8::is_ascii_digit).count();
            assert_eq!(agrees(p.as_bytes()), digits <= MAX_DIGITS, "{s}");
        }
    }

    #[test]
    fn mutations_never_disagree() {
        let mut rng = StdRng::seed_from_u64(41);
        let alphabet = b"{}[]\":,.-+0123456789eE \t\n\\ux_ptrufalsn\x01\xff";
        let base: Vec<u8> = GOOD.replace(r#""ts""#, r#""extra":"ok","ts""#).into_bytes();
        let (mut read, rounds) = (0, 300_000);
        for _ in 0..rounds {
            let mut p = base.clone();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..p.len());
                match rng.random_range(0..3) {
                    0 => p[at] = alphabet[rng.random_range(0..alphabet.len())],
                    1 => {
                        p.remove(at);
                    }
                    _ => p.insert(at, alphabet[rng.random_range(0..alphabet.len())]),
                }
            }
            read += usize::from(agrees(&p));
        }
        // Mutations that keep the shape (a digit for a digit, a space) must be read here,
        // or the comparison above proves nothing.
        assert!(read > rounds / 20, "only {read} of {rounds} read");
    }

    /// `cargo test --release -p fleetcast-proto parse_cost -- --ignored --nocapture`:
    /// nanoseconds per `check` of the load tester's 100-byte probe and of a simulator fix,
    /// this reader against serde_json (what it replaced), in one run.
    #[test]
    #[ignore = "a benchmark: prints figures"]
    fn parse_cost() {
        let probe = r#"{"id":"lt-0","lat":60.1,"lon":24.9,"heading":0,"speed":0,"accuracy":5,"status":"available","seq":123456,"ts":1764900000000,"tsu":1764900000000123,"pad":"xxxxxxxxx"}"#;
        for (name, payload) in [("probe", probe), ("fix", GOOD)] {
            let rounds = 2_000_000u32;
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(fields(std::hint::black_box(payload.as_bytes())));
            }
            let scan = t.elapsed().as_nanos() as f64 / f64::from(rounds);
            let t = std::time::Instant::now();
            for _ in 0..rounds {
                std::hint::black_box(serde(std::hint::black_box(payload.as_bytes())));
            }
            let serde = t.elapsed().as_nanos() as f64 / f64::from(rounds);
            println!(
                "{name} ({} B): scan {scan:.1} ns, serde_json {serde:.1} ns, {:.2}x",
                payload.len(),
                serde / scan
            );
        }
    }
}
