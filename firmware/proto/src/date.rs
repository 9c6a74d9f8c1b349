//! RFC 5322 3.3 date-time for trace headers and displays, without a
//! calendar crate and without allocating: [`Rfc5322`] is written with
//! `Display`.

use core::fmt;

/// A moment in seconds since 1970-01-01 UTC, shown as an RFC 5322 3.3
/// date-time, e.g. `Sun, 29 Nov 2026 23:44:08 +0000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc5322(pub i64);

impl fmt::Display for Rfc5322 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        // 1970-01-01 was a Thursday.
        let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
        let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(m - 1) as usize];
        write!(f, "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} +0000", sod / 3600, sod / 60 % 60, sod % 60)
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month 1-12, day 1-31) in the proleptic Gregorian calendar to days
/// since 1970-01-01: the inverse of [`civil_from_days`] (H. Hinnant's
/// algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn known_dates() {
        assert_eq!(Rfc5322(0).to_string(), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(Rfc5322(1_795_995_848).to_string(), "Sun, 29 Nov 2026 23:44:08 +0000");
        assert_eq!(Rfc5322(951_782_400).to_string(), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(Rfc5322(-1).to_string(), "Wed, 31 Dec 1969 23:59:59 +0000");
    }

    #[test]
    fn days_round_trip() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 2, 29), 951_782_400 / 86_400);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
