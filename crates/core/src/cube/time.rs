//! Time in space-time layers: instants as seconds since 1970-01-01T00:00:00 UTC in the
//! proleptic Gregorian calendar, and the CF `units` / `calendar` attributes that encode them.
//!
//! Only the calendars that are the proleptic Gregorian one for every date a reanalysis holds
//! (`standard`, `gregorian`, `proleptic_gregorian`) are accepted; `noleap`, `360_day` and the
//! others are refused by name rather than decoded wrongly.

use crate::error::{Error, Result};

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// The proleptic Gregorian date (year, month, day) of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The calendar fields of an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    /// Seconds since midnight.
    pub second_of_day: i64,
}

impl Civil {
    pub fn of(instant: i64) -> Civil {
        let days = instant.div_euclid(86400);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            second_of_day: instant.rem_euclid(86400),
        }
    }

    /// Day of the year, 1-based (as pandas' `dayofyear`).
    pub fn day_of_year(&self) -> u32 {
        (days_from_civil(self.year, self.month, self.day) - days_from_civil(self.year, 1, 1) + 1)
            as u32
    }
}

/// An instant in ISO 8601 form: `2019-03-01T00:00:00`.
pub fn format_instant(instant: i64) -> String {
    let c = Civil::of(instant);
    let s = c.second_of_day;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        c.year,
        c.month,
        c.day,
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH[:MM[:SS[.fff]]]` (or with a space for `T`), as UTC.
pub fn parse_instant(text: &str) -> Result<i64> {
    let bad = || {
        Error::invalid(format!(
            "cannot read time {text:?} (want YYYY-MM-DD[THH:MM:SS])"
        ))
    };
    let t = text.trim().trim_end_matches('Z');
    let (date, clock) = match t.find(['T', ' ']) {
        Some(i) => (&t[..i], t[i + 1..].trim()),
        None => (t, ""),
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (d.next(), d.next(), d.next());
    let year: i64 = y.and_then(|v| v.parse().ok()).ok_or_else(bad)?;
    let month: u32 = m.map_or(Some(1), |v| v.parse().ok()).ok_or_else(bad)?;
    let day: u32 = day.map_or(Some(1), |v| v.parse().ok()).ok_or_else(bad)?;
    if !(0..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
    {
        return Err(bad());
    }
    let mut secs = 0.0;
    if !clock.is_empty() {
        // Hours, minutes, seconds: each a number within its clock's range (24:00 is midnight
        // at the end of the day; a leap second is let through).
        for (part, (unit, limit)) in
            clock
                .split(':')
                .zip([(3600.0, 24.0), (60.0, 59.0), (1.0, 60.999)])
        {
            let v: f64 = part.parse().map_err(|_| bad())?;
            if !(0.0..=limit).contains(&v) {
                return Err(bad());
            }
            secs += v * unit;
        }
    }
    Ok(days_from_civil(year, month, day) * 86400 + secs.round() as i64)
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    let next = if month == 12 {
        days_from_civil(year + 1, 1, 1)
    } else {
        days_from_civil(year, month + 1, 1)
    };
    (next - days_from_civil(year, month, 1)) as u32
}

/// CF time units: `<unit> since <reference>`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeUnits {
    /// Seconds per unit.
    pub unit: f64,
    /// The reference instant.
    pub epoch: i64,
}

impl TimeUnits {
    /// Parses CF `units` and checks the `calendar`.
    pub fn parse(units: &str, calendar: Option<&str>) -> Result<TimeUnits> {
        if let Some(c) = calendar {
            let c = c.trim().to_ascii_lowercase();
            if !matches!(
                c.as_str(),
                "standard" | "gregorian" | "proleptic_gregorian" | ""
            ) {
                return Err(Error::invalid(format!(
                    "time calendar {c:?} is not supported (standard, gregorian and proleptic_gregorian are)"
                )));
            }
        }
        let lower = units.trim().to_ascii_lowercase();
        let (unit, reference) = lower.split_once(" since ").ok_or_else(|| {
            Error::invalid(format!(
                "time units {units:?} are not CF's '<unit> since <date>'"
            ))
        })?;
        let unit = match unit.trim() {
            "seconds" | "second" | "secs" | "sec" | "s" => 1.0,
            "minutes" | "minute" | "mins" | "min" => 60.0,
            "hours" | "hour" | "hrs" | "hr" | "h" => 3600.0,
            "days" | "day" | "d" => 86400.0,
            "milliseconds" | "millisecond" | "ms" => 0.001,
            "microseconds" | "microsecond" | "us" => 1e-6,
            "nanoseconds" | "nanosecond" | "ns" => 1e-9,
            other => {
                return Err(Error::invalid(format!(
                    "time unit {other:?} in {units:?} is not supported"
                )));
            }
        };
        // "1900-01-01 00:00:0.0", "1970-01-01T00:00:00Z", "2000-1-1"
        let reference = reference
            .trim()
            .trim_end_matches(" utc")
            .trim_end_matches("+00:00");
        let epoch = parse_instant(reference).map_err(|_| {
            Error::invalid(format!(
                "cannot read the reference date of time units {units:?}"
            ))
        })?;
        Ok(TimeUnits { unit, epoch })
    }

    /// The instant (whole seconds) of a value in these units.
    pub fn instant(&self, value: f64) -> i64 {
        self.epoch + (value * self.unit).round() as i64
    }

    /// The instant of a value that was read from a file: one that is not a number, or lands
    /// outside the years 1–9999, is an error (a damaged time coordinate, not a time).
    pub fn checked_instant(&self, value: f64) -> Result<i64> {
        // Seconds from 0001-01-01 to 9999-12-31 are within ±2.6e11 of the epoch.
        const SPAN: f64 = 4e11;
        let seconds = (value * self.unit).round();
        let instant = self.epoch as f64 + seconds;
        if !value.is_finite() || !seconds.is_finite() || instant.abs() > SPAN {
            return Err(Error::invalid(format!(
                "{value} is not a time in these units"
            )));
        }
        let instant = self.epoch + seconds as i64;
        let year = Civil::of(instant).year;
        if !(1..=9999).contains(&year) {
            return Err(Error::invalid(format!(
                "{value} is the year {year}, outside 1..=9999"
            )));
        }
        Ok(instant)
    }
}

/// The CF units a layer writes its time coordinate in: hours when every instant is on the hour
/// (int64 values, as ERA5's own files), seconds otherwise.
pub fn layer_time_units(instants: &[i64]) -> (&'static str, i64) {
    if instants.iter().all(|t| t % 3600 == 0) {
        ("hours since 1970-01-01 00:00:00", 3600)
    } else {
        ("seconds since 1970-01-01 00:00:00", 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_and_knows_leap_years() {
        for days in [-800_000, -1, 0, 1, 11_016, 17_956, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2019, 3, 1), 17_956);
        assert_eq!(days_in_month(2020, 2), 29);
        assert_eq!(days_in_month(1900, 2), 28);
        assert_eq!(
            Civil::of(parse_instant("2020-12-31").unwrap_or(0)).day_of_year(),
            366
        );
    }

    #[test]
    fn instants_parse_and_format() -> Result<()> {
        assert_eq!(parse_instant("2019-03-01")?, 1_551_398_400);
        assert_eq!(parse_instant("2019-03-01T01")?, 1_551_402_000);
        assert_eq!(parse_instant("2019-03-01 01:30:00")?, 1_551_403_800);
        assert_eq!(format_instant(1_551_403_800), "2019-03-01T01:30:00");
        assert!(parse_instant("2019-02-30").is_err());
        assert!(parse_instant("yesterday").is_err());
        Ok(())
    }

    #[test]
    fn cf_units_decode() -> Result<()> {
        let u = TimeUnits::parse("days since 1900-01-01", Some("proleptic_gregorian"))?;
        assert_eq!(u.instant(40_209.0), parse_instant("2010-02-02")?);
        let h = TimeUnits::parse("hours since 1900-01-01 00:00:0.0", Some("gregorian"))?;
        assert_eq!(h.instant(24.0), parse_instant("1900-01-02")?);
        assert!(TimeUnits::parse("days since 2000-01-01", Some("noleap")).is_err());
        assert!(TimeUnits::parse("fortnights since 2000-01-01", None).is_err());
        Ok(())
    }
}
