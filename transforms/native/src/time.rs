//! RFC 3339 times to the canonical UTC form of schemas/events.py (`normalize_time`), with the
//! proleptic Gregorian day arithmetic it needs.

// ---------------------------------------------------------------------------------- time

pub(crate) fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `normalize_time` of schemas/events.py for the times it can prove the same; None refers.
pub(crate) fn normalize_time(text: &str) -> Option<String> {
    let b = text.as_bytes();
    if b.len() < 20 || !b.is_ascii() {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    if b.len() == 24 && b[19] == b'.' && b[23] == b'Z' {
        num(20, 23)?;
        return Some(text.to_string()); // already canonical: kept as it is
    }
    let (rest, offset) = if let Some(head) = text.strip_suffix('Z') {
        (&head[19..], 0)
    } else {
        let tz = &text[text.len() - 6..];
        let tb = tz.as_bytes();
        let sign = match tb[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        if tb[3] != b':' {
            return None;
        }
        let (oh, om) = (num(text.len() - 5, text.len() - 3)?, num(text.len() - 2, text.len())?);
        if oh > 23 || om > 59 {
            return None;
        }
        (&text[19..text.len() - 6], sign * (oh * 3600 + om * 60))
    };
    let millis = if rest.is_empty() {
        0
    } else {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{frac}000");
        padded[..3].parse::<i64>().ok()?
    };
    let seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
    let (y, m, d) = civil_from_days(seconds.div_euclid(86400));
    if !(1000..=9999).contains(&y) {
        return None; // Python's strftime writes years below 1000 without padding: let it say so
    }
    let s = seconds.rem_euclid(86400);
    Some(format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", s / 3600, s / 60 % 60, s % 60))
}
