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
        let fields = line.split_whitespace().count();
        if fields != 5 {
            return Err(format!(
                "invalid schedule `{s}`: expected `@every <duration>`, `@hourly`, `@daily`, `@weekly` or five cron fields (minute hour day-of-month month day-of-week), found {fields} field(s)"
            ));
        }
        cron::Schedule::from_str(&format!("0 {line}"))
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("invalid cron line `{s}`: {e}"))
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
    fn next_cron_time_is_utc() {
        let s = Schedule::parse("30 3 * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 4, 0, 0).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 30, 0).unwrap())
        );
    }
}
