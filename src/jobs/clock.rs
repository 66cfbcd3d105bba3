//! Wall-clock time for the jobs, injectable.
//!
//! Timers use tokio's monotonic clock (pausable in tests); cron slots, "today" and
//! cooldowns need calendar time. [`TokioClock`] derives calendar time from tokio's clock so
//! a test with `tokio::time::pause()` moves both together.

use chrono::{DateTime, Utc};

/// Current wall-clock time in UTC.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Calendar time that starts at a chosen instant and advances with tokio's clock
/// (`tokio::time::Instant`), so `tokio::time::pause()`/`advance()` drive it.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: DateTime<Utc>,
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// Must be called inside a tokio runtime (it reads tokio's clock).
    pub fn starting_at(wall: DateTime<Utc>) -> TokioClock {
        TokioClock {
            wall,
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.origin);
        self.wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}

/// Seconds since the epoch with millisecond precision, for `*_timestamp_seconds`.
pub fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}
