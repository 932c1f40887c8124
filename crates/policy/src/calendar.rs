//! Instants as Unix milliseconds, UTC calendar arithmetic and RFC 3339 rendering.
//!
//! Owns the civil-date conversions behind budget windows (day, ISO week, month) so that window
//! math is pure integer arithmetic on a time that is passed in. Nothing here reads the system
//! clock except [`SystemClock`], which callers inject; the window rules themselves live in
//! [`crate::budget`].

use std::fmt;
use std::time::Duration;

/// An instant, in milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(pub i64);

pub(crate) const MS_PER_DAY: i64 = 86_400_000;

impl UnixMs {
    /// The instant at 00:00:00Z of a calendar date; `None` for an impossible date.
    pub fn from_date(year: i64, month: u32, day: u32) -> Option<UnixMs> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        days_from_civil(year, month, day)
            .checked_mul(MS_PER_DAY)
            .map(UnixMs)
    }

    /// The instant at a time of day on a calendar date (UTC); `None` if out of range.
    pub fn from_date_time(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
    ) -> Option<UnixMs> {
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let midnight = Self::from_date(year, month, day)?;
        let offset = (i64::from(hour) * 3_600 + i64::from(minute) * 60 + i64::from(second)) * 1_000;
        midnight.0.checked_add(offset).map(UnixMs)
    }

    pub fn saturating_add(self, duration: Duration) -> UnixMs {
        UnixMs(self.0.saturating_add(duration_ms(duration)))
    }

    /// Time from `self` until `later`; zero if `later` is not after `self`.
    pub fn until(self, later: UnixMs) -> Duration {
        let ms = later.0.saturating_sub(self.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// Days since 1970-01-01 of the UTC date this instant falls on.
    pub(crate) fn day_number(self) -> i64 {
        self.0.div_euclid(MS_PER_DAY)
    }
}

/// RFC 3339 in UTC: `2026-12-03T00:00:00Z`, with `.mmm` only when the milliseconds are not zero.
impl fmt::Display for UnixMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = self.day_number();
        let (year, month, day_of_month) = civil_from_days(day);
        let ms_of_day = self.0.rem_euclid(MS_PER_DAY);
        let seconds = ms_of_day / 1_000;
        let millis = ms_of_day % 1_000;
        if (0..=9999).contains(&year) {
            // By hand, not with `write!`'s padding: budget headers carry one on every answer.
            let mut text = *b"0000-00-00T00:00:00.000Z";
            put_digits(&mut text[0..4], year);
            put_digits(&mut text[5..7], i64::from(month));
            put_digits(&mut text[8..10], i64::from(day_of_month));
            put_digits(&mut text[11..13], seconds / 3_600);
            put_digits(&mut text[14..16], seconds / 60 % 60);
            put_digits(&mut text[17..19], seconds % 60);
            let end = if millis != 0 {
                put_digits(&mut text[20..23], millis);
                text.len()
            } else {
                text[19] = b'Z';
                20
            };
            return f.write_str(std::str::from_utf8(&text[..end]).map_err(|_| fmt::Error)?);
        }
        write!(
            f,
            "{year:04}-{month:02}-{day_of_month:02}T{:02}:{:02}:{:02}",
            seconds / 3_600,
            seconds / 60 % 60,
            seconds % 60
        )?;
        if millis != 0 {
            write!(f, ".{millis:03}")?;
        }
        f.write_str("Z")
    }
}

/// Fills `out` with the last decimal digits of `value`'s magnitude, zero-padded.
pub(crate) fn put_digits(out: &mut [u8], value: i64) {
    let mut rest = value.unsigned_abs();
    for digit in out.iter_mut().rev() {
        *digit = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
    }
}

/// Where the current time comes from. Budget and counter math take instants as arguments; the
/// request path asks an injected clock once and passes the answer down.
pub trait Clock: Send + Sync {
    fn now(&self) -> UnixMs;
}

/// The operating system's wall clock. Replicas that share counters must keep their clocks in
/// sync (NTP): the window a request is counted in is chosen by the replica's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMs {
        UnixMs(sluice_types::clock::unix_ms())
    }
}

/// Whole milliseconds of a duration, saturating at `i64::MAX`.
pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day number (inverse of [`days_from_civil`]).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both values are within 1..=31 and 1..=12 by construction.
    (year, month as u32, day as u32)
}

/// 0 for Monday through 6 for Sunday. 1970-01-01 was a Thursday.
pub(crate) fn weekday_from_monday(days: i64) -> i64 {
    (days + 3).rem_euclid(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_known_dates_both_ways() {
        for (year, month, day, number) in [
            (1970, 1, 1, 0),
            (2000, 2, 29, 11_016),
            (2026, 12, 3, 20_790),
            (1969, 12, 31, -1),
            (1600, 3, 1, -135_080),
        ] {
            assert_eq!(
                days_from_civil(year, month, day),
                number,
                "{year}-{month}-{day}"
            );
            assert_eq!(civil_from_days(number), (year, month, day));
        }
    }

    #[test]
    fn round_trips_every_day_over_four_centuries() {
        let start = days_from_civil(1900, 1, 1);
        let end = days_from_civil(2300, 1, 1);
        let mut expected = (1900, 1, 1);
        for number in start..end {
            assert_eq!(civil_from_days(number), expected);
            assert_eq!(days_from_civil(expected.0, expected.1, expected.2), number);
            let (year, month, day) = expected;
            expected = if day < days_in_month(year, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
        }
    }

    #[test]
    fn knows_weekdays() {
        // 2026-11-30 is a Monday, 2026-12-06 a Sunday.
        assert_eq!(weekday_from_monday(days_from_civil(2026, 11, 30)), 0);
        assert_eq!(weekday_from_monday(days_from_civil(2026, 12, 6)), 6);
        assert_eq!(weekday_from_monday(0), 3);
        assert_eq!(weekday_from_monday(-1), 2);
    }

    #[test]
    fn renders_rfc3339_in_utc() {
        let reset = UnixMs::from_date(2026, 12, 3).unwrap();
        assert_eq!(reset.to_string(), "2026-12-03T00:00:00Z");
        let with_time = UnixMs::from_date_time(2026, 12, 2, 23, 59, 59).unwrap();
        assert_eq!(with_time.to_string(), "2026-12-02T23:59:59Z");
        assert_eq!(
            UnixMs(with_time.0 + 999).to_string(),
            "2026-12-02T23:59:59.999Z"
        );
        assert_eq!(UnixMs(-1).to_string(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn rejects_impossible_dates() {
        assert_eq!(UnixMs::from_date(2026, 2, 29), None);
        assert!(UnixMs::from_date(2028, 2, 29).is_some());
        assert_eq!(UnixMs::from_date(2026, 13, 1), None);
        assert_eq!(UnixMs::from_date(2026, 4, 31), None);
        assert_eq!(UnixMs::from_date_time(2026, 1, 1, 24, 0, 0), None);
    }

    #[test]
    fn measures_time_until_a_later_instant() {
        let now = UnixMs(10_000);
        assert_eq!(now.until(UnixMs(12_500)), Duration::from_millis(2_500));
        assert_eq!(now.until(UnixMs(9_000)), Duration::ZERO);
    }
}
