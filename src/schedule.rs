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
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

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
