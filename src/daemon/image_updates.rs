//! The image update checker (`update.image`): a daemon task on its own timer that asks
//! each watched image's registry whether the tag moved, and reports to the loop.
//!
//! Per image reference, at most one registry check per `checkInterval` (the shortest of
//! the services using it); after a failed check, again after 5 minutes (or the
//! interval, if shorter); after a `429`/`503`, nothing to that registry before its
//! `Retry-After`. Every check is recorded in `<state>/image-checks.json` (atomic write)
//! before it is reported, so a restart does not ask again early. `auto` images that
//! moved are pulled here: the moved local tag is `image_changed` for the next pass,
//! which rolls it out through the health gate. A rolled-back image is not pulled again:
//! the local tag already names it, so the next check finds nothing new.
//!
//! The task never blocks the loop: it owns its file and sends [`Checked`] as an event.

use super::jobs_feed::EngineSlot;
use super::Event;
use crate::desired::model::service::ImageUpdatePolicy;
use crate::desired::DesiredState;
use crate::docker::Docker;
use crate::registry::{Client, ImageRef, RegistryError};
use crate::state::{now_ms, ImageCheck, ImageChecks};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// After a failed check (not rate-limited), the next one is due after this, or the
/// image's interval if that is shorter.
const ERROR_RETRY: Duration = Duration::from_secs(300);
/// While the engine is unreachable or an image is not present locally, look again after
/// this (no registry request is made for either).
const LOCAL_RETRY: Duration = Duration::from_secs(60);

/// While the engine is not connected, how often the checker looks for it.
const ENGINE_POLL: Duration = Duration::from_secs(1);

/// One watched image reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The shortest `checkInterval` of the services using it.
    pub interval: Duration,
    /// Some service using it has `policy: auto` (the tag is shared: a pull moves it for
    /// all of them).
    pub auto: bool,
    pub services: Vec<String>,
}

/// Watched images by reference.
pub type Targets = BTreeMap<String, Target>;

/// The watched images of a desired state.
pub fn targets(d: &DesiredState) -> Targets {
    let mut t: Targets = BTreeMap::new();
    for (name, r) in &d.services {
        let Some(iu) = r.spec.image_updates() else {
            continue;
        };
        let e = t.entry(r.spec.image.clone()).or_insert(Target {
            interval: iu.interval(),
            auto: false,
            services: Vec::new(),
        });
        e.interval = e.interval.min(iu.interval());
        e.auto |= iu.policy == ImageUpdatePolicy::Auto;
        e.services.push(name.clone());
    }
    t
}

/// What one round of checks found, for the loop.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Every image's latest check (the planner's input).
    pub checks: BTreeMap<String, ImageCheck>,
    /// Results of the checks made in this round: `current`, `outdated`, `pulled`,
    /// `error`.
    pub results: Vec<&'static str>,
    /// Error classes of this round's failed checks (`obsd_image_check_errors_total`).
    pub errors: Vec<&'static str>,
    /// Services whose image was pulled (`auto`): their holds are cleared, so the new
    /// image gets its one rollout.
    pub pulled: Vec<String>,
}

/// When the image is next due, or now when it was never checked.
fn due_at(check: Option<&ImageCheck>, t: &Target) -> i64 {
    match check {
        None => 0,
        Some(c) => match c.retry_at_ms {
            Some(r) => r,
            None => c.checked_at_ms + t.interval.as_millis() as i64,
        },
    }
}

/// Runs until `shutdown`: waits for the first desired state, then checks what is due,
/// records and reports it, and sleeps until the next image is due or the targets
/// change.
pub(super) async fn run(
    state_dir: PathBuf,
    engine: EngineSlot,
    mut targets: watch::Receiver<Option<Targets>>,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    let client = Client::new();
    let mut checks = ImageChecks::load(&state_dir).unwrap_or_else(|e| {
        warn!(error = %e, "image checks: starting without the recorded checks");
        ImageChecks::default()
    });
    loop {
        let current = targets.borrow_and_update().clone();
        let mut wake = LOCAL_RETRY;
        if let Some(t) = current {
            let before = checks.clone();
            // Forget images no longer watched.
            checks.images.retain(|image, _| t.contains_key(image));
            let now = now_ms();
            checks.not_before_ms.retain(|_, until| *until > now);
            let eng = engine.read().expect("engine slot").clone();
            let mut round = Checked {
                checks: BTreeMap::new(),
                results: Vec::new(),
                errors: Vec::new(),
                pulled: Vec::new(),
            };
            if let Some(eng) = eng {
                for (image, target) in &t {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    let now = now_ms();
                    if due_at(checks.images.get(image), target) > now {
                        continue;
                    }
                    check_one(&client, &eng, image, target, &mut checks, &mut round).await;
                }
            }
            if checks != before {
                if let Err(e) = checks.save(&state_dir) {
                    warn!(error = %e, "cannot save image checks");
                }
            }
            // The loop hears of checks made and of what the planner reads changing,
            // not of postponements (an image not present locally yet).
            if !round.results.is_empty() || planner_view(&checks) != planner_view(&before) {
                round.checks = checks.images.clone();
                if tx.send(Event::ImageChecks(Box::new(round))).await.is_err() {
                    return;
                }
            }
            let now = now_ms();
            let next = t
                .iter()
                .map(|(image, target)| {
                    let host = ImageRef::parse(image)
                        .map(|r| r.registry)
                        .unwrap_or_default();
                    due_at(checks.images.get(image), target)
                        .max(checks.not_before_ms.get(&host).copied().unwrap_or(0))
                })
                .min();
            if let Some(next) = next {
                let ms = (next - now).clamp(0, LOCAL_RETRY.as_millis() as i64 * 60);
                wake = Duration::from_millis(ms as u64).max(Duration::from_millis(200));
            } else {
                wake = Duration::from_secs(3600);
            }
            if engine_missing(&engine) {
                // Look for the engine often: the first checks wait for it.
                wake = wake.min(ENGINE_POLL);
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = targets.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

/// What the planner reads of the checks (not when they were made).
fn planner_view(c: &ImageChecks) -> Vec<(&String, &Option<String>, bool, &Option<String>)> {
    c.images
        .iter()
        .map(|(image, k)| (image, &k.local_id, k.outdated, &k.error))
        .collect()
}

fn engine_missing(engine: &EngineSlot) -> bool {
    engine.read().expect("engine slot").is_none()
}

/// One image: the local image, the registry's digest, the comparison, and for `auto`
/// the pull. Records the result in `checks` and `round`.
async fn check_one<D: Docker>(
    client: &Client,
    engine: &D,
    image: &str,
    target: &Target,
    checks: &mut ImageChecks,
    round: &mut Checked,
) {
    let now = now_ms();
    let error_retry = now + ERROR_RETRY.min(target.interval).as_millis() as i64;
    let failed = |error: String, retry_at: i64| ImageCheck {
        checked_at_ms: now,
        remote_digest: None,
        local_id: None,
        outdated: false,
        error: Some(error),
        retry_at_ms: Some(retry_at),
    };
    let r = match ImageRef::parse(image) {
        Ok(r) => r,
        Err(e) => {
            checks.images.insert(
                image.into(),
                failed(e, now + target.interval.as_millis() as i64),
            );
            return;
        }
    };
    if checks
        .not_before_ms
        .get(&r.registry)
        .is_some_and(|t| *t > now)
    {
        return;
    }
    let local = match engine.inspect_image(image).await {
        Ok(Some(l)) => l,
        // Not present (the pass pulls it) or the engine failed: no registry request.
        Ok(None) | Err(_) => {
            checks.images.insert(
                image.into(),
                ImageCheck {
                    checked_at_ms: now,
                    retry_at_ms: Some(now + LOCAL_RETRY.as_millis() as i64),
                    ..Default::default()
                },
            );
            return;
        }
    };
    let digest = match client.head_digest(&r, now).await {
        Ok(d) => d,
        Err(e) => {
            let retry_at = match &e {
                RegistryError::RateLimited { until_ms, .. } => {
                    checks.not_before_ms.insert(r.registry.clone(), *until_ms);
                    *until_ms
                }
                _ => error_retry,
            };
            warn!(image, error = %e, "image update check failed");
            round.results.push("error");
            round.errors.push(e.class());
            // Keep what the last good check found (a failed check is not news).
            let mut rec = failed(e.to_string(), retry_at);
            if let Some(old) = checks.images.get(image) {
                rec.remote_digest = old.remote_digest.clone();
                rec.local_id = old.local_id.clone();
                rec.outdated = old.outdated;
            }
            checks.images.insert(image.into(), rec);
            return;
        }
    };
    let outdated = !local
        .repo_digests
        .iter()
        .any(|rd| rd.rsplit_once('@').is_some_and(|(_, d)| d == digest));
    let mut rec = ImageCheck {
        checked_at_ms: now,
        remote_digest: Some(digest.clone()),
        local_id: Some(local.id.clone()),
        outdated,
        error: None,
        retry_at_ms: None,
    };
    if outdated && target.auto {
        match engine.pull_image(image).await {
            Ok(()) => {
                info!(image, digest = %digest, "image update: pulled the moved tag");
                let id = engine
                    .inspect_image(image)
                    .await
                    .ok()
                    .flatten()
                    .map(|l| l.id);
                rec.local_id = id;
                rec.outdated = false;
                round.results.push("pulled");
                round.pulled.extend(target.services.iter().cloned());
            }
            Err(e) => {
                warn!(image, error = %e, "image update: pull failed");
                rec.error = Some(e.to_string());
                rec.retry_at_ms = Some(error_retry);
                round.results.push("error");
                round.errors.push("pull");
            }
        }
    } else {
        if outdated {
            info!(image, digest = %digest, "image update available");
        }
        round
            .results
            .push(if outdated { "outdated" } else { "current" });
    }
    checks.images.insert(image.into(), rec);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(minutes: u64) -> Target {
        Target {
            interval: Duration::from_secs(minutes * 60),
            auto: false,
            services: vec!["app".into()],
        }
    }

    #[test]
    fn an_image_is_due_once_per_interval_or_at_its_retry_time() {
        let t = target(10);
        assert_eq!(due_at(None, &t), 0, "never checked: now");
        let ok = ImageCheck {
            checked_at_ms: 1_000,
            ..Default::default()
        };
        assert_eq!(due_at(Some(&ok), &t), 1_000 + 600_000);
        let limited = ImageCheck {
            checked_at_ms: 1_000,
            error: Some("rate-limited".into()),
            retry_at_ms: Some(4_000),
            ..Default::default()
        };
        assert_eq!(
            due_at(Some(&limited), &t),
            4_000,
            "the registry's Retry-After"
        );
    }

    #[test]
    fn services_sharing_an_image_share_one_check() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str, image: &str, update: &str| {
            format!("---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{image: \"{image}\"{update}}}\n")
        };
        let yaml = format!(
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Stack\nmetadata: {{name: t}}\nspec: {{project: t, defaultNetwork: default}}\n---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Network\nmetadata: {{name: default}}\nspec: {{}}\n{}{}{}{}",
            svc("a", "app:1", ", update: {image: {policy: notify, checkInterval: 2h}}"),
            svc("b", "app:1", ", update: {image: {policy: auto, checkInterval: 30m}}"),
            svc("c", "other:1", ", update: {image: {policy: notify}}"),
            svc("d", "plain:1", ""),
        );
        std::fs::write(dir.path().join("s.yaml"), yaml).unwrap();
        let d = crate::desired::load::load_dir(dir.path(), &Default::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let t = targets(&d);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(
            t["app:1"].interval,
            Duration::from_secs(1800),
            "the shortest"
        );
        assert!(t["app:1"].auto, "auto wins: the tag is shared");
        assert_eq!(t["app:1"].services, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(t["other:1"].interval, Duration::from_secs(6 * 3600));
        assert!(!t["other:1"].auto);
    }
}
