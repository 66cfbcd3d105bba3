//! When the daemon looks again after a pass: a pure decision from what the pass found,
//! tested without a clock (as [`super::alerting::Alerter::decide`] is).

use crate::reconcile::Pass;
use crate::state::Persisted;
use std::time::Duration;

/// What a finished pass says about when to look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct PassOutcome {
    /// The pass could not run (the engine did not answer the observation).
    errored: bool,
    /// An action failed, or a service is still backing off.
    failed: bool,
    /// The plan had steps: what was done must be looked at again.
    acted: bool,
    /// Something was skipped (waiting on a dependency, backing off).
    needs_requeue: bool,
    /// The earliest backoff retry still ahead, in ms from now.
    soonest_retry_ms: Option<u64>,
}

impl PassOutcome {
    pub(super) fn errored() -> PassOutcome {
        PassOutcome {
            errored: true,
            ..Default::default()
        }
    }

    pub(super) fn of(pass: &Pass, persisted: &Persisted, now_ms: i64) -> PassOutcome {
        PassOutcome {
            errored: false,
            failed: pass.failed(),
            acted: !pass.plan.is_noop(),
            needs_requeue: pass.report.as_ref().is_some_and(|r| r.needs_requeue()),
            soonest_retry_ms: persisted
                .backoff
                .values()
                .map(|b| b.retry_at_ms)
                .filter(|t| *t > now_ms)
                .min()
                .map(|t| (t - now_ms) as u64),
        }
    }
}

/// When to look again after a pass (`None`: on the next event or resync). Pure, so the
/// daemon's pacing is tested without a clock:
/// * a pass that could not run: in 5 s;
/// * a failed pass: when the earliest backoff expires (at least 100 ms);
/// * a pass that skipped something (waiting on a dependency): in 500 ms;
/// * a pass that acted: in 50 ms, to see the result;
/// * a pass that found nothing to do: not until something happens.
pub(super) fn next_look(o: &PassOutcome) -> Option<Duration> {
    if o.errored {
        return Some(Duration::from_secs(5));
    }
    if !o.acted && !o.needs_requeue {
        return None;
    }
    Some(match (o.needs_requeue, o.soonest_retry_ms) {
        (_, Some(ms)) if o.failed => Duration::from_millis(ms.max(100)),
        (true, _) => Duration::from_millis(500),
        _ => Duration::from_millis(50),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(f: impl FnOnce(&mut PassOutcome)) -> PassOutcome {
        let mut o = PassOutcome::default();
        f(&mut o);
        o
    }

    #[test]
    fn when_to_look_again() {
        let ms = Duration::from_millis;
        let cases: [(&str, PassOutcome, Option<Duration>); 8] = [
            ("nothing to do", o(|_| {}), None),
            (
                "engine did not answer",
                PassOutcome::errored(),
                Some(ms(5000)),
            ),
            ("acted", o(|o| o.acted = true), Some(ms(50))),
            (
                "waiting on a dependency",
                o(|o| {
                    o.acted = true;
                    o.needs_requeue = true
                }),
                Some(ms(500)),
            ),
            (
                "failed: at the backoff",
                o(|o| {
                    o.acted = true;
                    o.failed = true;
                    o.needs_requeue = true;
                    o.soonest_retry_ms = Some(8000)
                }),
                Some(ms(8000)),
            ),
            (
                "failed: a backoff about to expire is not a busy loop",
                o(|o| {
                    o.acted = true;
                    o.failed = true;
                    o.soonest_retry_ms = Some(3)
                }),
                Some(ms(100)),
            ),
            (
                "backing off, nothing else: at the backoff",
                o(|o| {
                    o.failed = true;
                    o.needs_requeue = true;
                    o.soonest_retry_ms = Some(2000)
                }),
                Some(ms(2000)),
            ),
            (
                "a retry time without failure is not a reason",
                o(|o| {
                    o.acted = true;
                    o.soonest_retry_ms = Some(9000)
                }),
                Some(ms(50)),
            ),
        ];
        for (what, outcome, want) in cases {
            assert_eq!(next_look(&outcome), want, "{what}: {outcome:?}");
        }
    }
}
