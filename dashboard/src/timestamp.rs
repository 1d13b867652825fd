//! Instants as the history API takes them: RFC 3339 (`2026-12-03T14:05:00Z`,
//! `2026-12-03T16:05:00.250+02:00`) or milliseconds since the epoch (`1764770700000`).
//! Hand-written (forty lines) rather than a date crate for one format.

/// Milliseconds since the epoch of `text`; None when it is neither form (or before 1970).
pub fn parse_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let s = text.get(from..from + len)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let valid = (1..=12).contains(&month)
        && (1..=days_in(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60;
    if !valid {
        return None;
    }
    // Fraction of a second: milliseconds kept, finer digits dropped.
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let kept = &text[i + 1..i + 1 + digits.min(3)];
        millis = kept.parse::<i64>().ok()? * 10i64.pow(3 - kept.len() as u32);
        i += 1 + digits;
    }
    let offset_s = match &text[i..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && zone.as_bytes()[3] == b':' =>
        {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            sign * (h * 3_600 + m * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_s;
    u64::try_from(secs * 1_000 + millis).ok()
}

fn days_in(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::parse_ms;

    #[test]
    fn rfc3339_and_milliseconds() {
        assert_eq!(parse_ms("1764770700000"), Some(1_764_770_700_000));
        assert_eq!(parse_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_ms("2026-12-03T14:05:00Z"), Some(1_796_306_700_000));
        assert_eq!(
            parse_ms("2026-12-03T16:05:00.25+02:00"),
            Some(1_796_306_700_250)
        );
        assert_eq!(
            parse_ms("2024-02-29T00:00:00.123456Z"),
            Some(1_709_164_800_123)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-12-03T14:05:00",
            "2026-12-03T14:05:00.Z",
            "1969-12-31T23:59:59Z",
            "2026-12-03T14:05:00+0200",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
        }
    }
}
