//! Job schedules: `@every <duration>`, `@hourly`, `@daily`, `@weekly`, or a five-field
//! cron line, all in UTC.

use chrono::{DateTime, Utc};
use std::str::FromStr;

#[derive(Debug, Clone)]
pub enum Schedule {
    /// Fixed interval from the previous scheduled time.
    Every(std::time::Duration),
    /// Cron expression (stored with a leading seconds field of `0`).
    Cron(Box<cron::Schedule>),
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("@every") {
            let d = humantime::parse_duration(rest.trim())
                .map_err(|e| format!("invalid schedule `{s}`: {e}; write e.g. `@every 5m`"))?;
            if d > std::time::Duration::from_secs(366 * 24 * 3600) {
                return Err(format!(
                    "invalid schedule `{s}`: the interval must be at most a year"
                ));
            }
            if d < std::time::Duration::from_secs(1) {
                return Err(format!(
                    "invalid schedule `{s}`: the interval must be at least 1s"
                ));
            }
            return Ok(Schedule::Every(d));
        }
        let line = match s {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            other => other,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "invalid schedule `{s}`: expected `@every <duration>`, `@hourly`, `@daily`, `@weekly` or five cron fields (minute hour day-of-month month day-of-week), found {} field(s)",
                fields.len()
            ));
        }
        let dow = unix_weekdays(fields[4])
            .map_err(|e| format!("invalid cron line `{s}`: day-of-week {e}"))?;
        let full = format!(
            "0 {} {} {} {} {dow}",
            fields[0], fields[1], fields[2], fields[3]
        );
        let c = cron::Schedule::from_str(&full).map_err(|e| {
            // The crate's message spans lines and shows the internal seconds field.
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            format!("invalid cron line `{s}` (minute hour day-of-month month day-of-week, UTC): {first}")
        })?;
        if c.upcoming(Utc).next().is_none() {
            return Err(format!(
                "invalid cron line `{s}`: it never fires (e.g. 31 February)"
            ));
        }
        Ok(Schedule::Cron(Box::new(c)))
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(d) => Some(t + chrono::Duration::from_std(*d).ok()?),
            Schedule::Cron(c) => c.after(&t).next(),
        }
    }

    /// The most recent scheduled time `t` with `after < t <= now`: the slot a scheduler
    /// that was down between `after` and `now` missed last (`None` when none was missed).
    ///
    /// `@every` slots are anchored at `after` (the previous scheduled time), so the
    /// cadence survives a restart; cron slots are absolute. Both are computed without
    /// walking every missed slot, so a long downtime costs nothing.
    pub fn latest_between(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if now <= after {
            return None;
        }
        match self {
            Schedule::Every(d) => {
                let step = i64::try_from(d.as_millis()).ok()?;
                let missed = (now - after).num_milliseconds() / step;
                if missed == 0 {
                    return None;
                }
                after.checked_add_signed(chrono::Duration::milliseconds(missed.checked_mul(step)?))
            }
            Schedule::Cron(c) => {
                // `next_back` yields the slots strictly before its start; cron slots fall on
                // whole seconds, so starting one second after `now` includes `now` itself.
                let t = c.after(&(now + chrono::Duration::seconds(1))).next_back()?;
                (t > after).then_some(t)
            }
        }
    }
}

/// Translates a Unix cron day-of-week field (0–7, 0 and 7 = Sunday, names, ranges,
/// lists, steps) into the cron crate's numbering (1 = Sunday … 7 = Saturday), by
/// expanding it to the set of days.
fn unix_weekdays(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok("*".into());
    }
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let day = |t: &str| -> Result<u32, String> {
        let up = t.to_ascii_uppercase();
        if let Some(i) = NAMES.iter().position(|n| *n == up) {
            return Ok(i as u32);
        }
        match t.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(n % 7),
            _ => Err(format!("`{t}` is not a weekday (0-7 or SUN-SAT)")),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("bad step in `{item}`"))?,
            ),
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let a = day(a)?;
                    // `5-7` ends on Sunday: keep 7 as the upper bound.
                    let b = if b == "7" { 7 } else { day(b)? };
                    if a > b {
                        return Err(format!("range `{r}` runs backwards"));
                    }
                    (a, b)
                }
                None => {
                    let a = day(r)?;
                    (a, if step > 1 { 6 } else { a })
                }
            },
        };
        let mut d = lo;
        while d <= hi {
            days[(d % 7) as usize] = true;
            d += step;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".into());
    }
    Ok(days
        .iter()
        .enumerate()
        .filter(|(_, on)| **on)
        .map(|(i, _)| (i + 1).to_string())
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn latest_missed_slot() {
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 1, d, h, m, 0).unwrap();
        let cron = Schedule::parse("30 3 * * *").unwrap();
        // Down from 1 Jan 04:00 to 5 Jan 03:30 (inclusive): the last missed slot is 5 Jan.
        assert_eq!(
            cron.latest_between(at(1, 4, 0), at(5, 3, 30)),
            Some(at(5, 3, 30))
        );
        assert_eq!(
            cron.latest_between(at(1, 4, 0), at(5, 3, 29)),
            Some(at(4, 3, 30))
        );
        // Nothing due between the two instants.
        assert_eq!(cron.latest_between(at(1, 4, 0), at(2, 3, 0)), None);
        // A slot exactly at `after` was already handled.
        assert_eq!(cron.latest_between(at(1, 3, 30), at(1, 4, 0)), None);
        assert_eq!(cron.latest_between(at(2, 0, 0), at(1, 0, 0)), None);

        let every = Schedule::parse("@every 5m").unwrap();
        assert_eq!(every.latest_between(at(1, 0, 0), at(1, 0, 4)), None);
        assert_eq!(
            every.latest_between(at(1, 0, 0), at(1, 0, 5)),
            Some(at(1, 0, 5))
        );
        assert_eq!(
            every.latest_between(at(1, 0, 0), at(1, 1, 2)),
            Some(at(1, 1, 0))
        );
        // A year of downtime is one division, not 100k iterations.
        let later = Utc.with_ymd_and_hms(2027, 1, 1, 0, 1, 0).unwrap();
        assert_eq!(
            every.latest_between(at(1, 0, 0), later),
            Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn parses_forms() {
        assert!(
            matches!(Schedule::parse("@every 5m"), Ok(Schedule::Every(d)) if d.as_secs() == 300)
        );
        assert!(Schedule::parse("30 3 * * *").is_ok());
        assert!(Schedule::parse("@daily").is_ok());
        assert!(Schedule::parse("@every").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("* * *").is_err());
    }

    #[test]
    fn weekdays_use_unix_numbering() {
        use chrono::Datelike;
        // 2026-01-01 is a Thursday.
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let next = |line: &str| {
            Schedule::parse(line)
                .unwrap()
                .next_after(t)
                .unwrap()
                .weekday()
        };
        assert_eq!(next("0 12 * * 1"), chrono::Weekday::Mon);
        assert_eq!(next("0 12 * * 0"), chrono::Weekday::Sun);
        assert_eq!(next("0 12 * * 7"), chrono::Weekday::Sun);
        assert_eq!(next("0 12 * * SAT"), chrono::Weekday::Sat);
        assert_eq!(next("0 12 * * 5-7"), chrono::Weekday::Fri);
        assert_eq!(next("@weekly"), chrono::Weekday::Sun);
        assert_eq!(unix_weekdays("1-5").unwrap(), "2,3,4,5,6");
        assert_eq!(unix_weekdays("*/2").unwrap(), "1,3,5,7");
        assert!(unix_weekdays("8").is_err());
    }

    #[test]
    fn never_firing_and_readable_errors() {
        assert!(Schedule::parse("0 0 31 2 *")
            .unwrap_err()
            .contains("never fires"));
        let e = Schedule::parse("61 * * * *").unwrap_err();
        assert!(!e.contains('\n') && e.contains("`61 * * * *`"), "{e}");
        assert!(Schedule::parse("@every 18446744073709551615s").is_err());
    }

    #[test]
    fn next_cron_time_is_utc() {
        let s = Schedule::parse("30 3 * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 4, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 30, 0).unwrap())
        );
    }
}
