//! The daemon's inputs: the desired-state directory, the Docker event stream and
//! signals, each a task that turns what it sees into an [`Event`] and never acts itself.

use super::Event;
use crate::desired::DesiredState;
use crate::docker::engine::Engine;
use crate::docker::{labels, Docker, EngineEvent};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Opens the engine (connect, negotiate, ping); the error without the "unreachable"
/// prefix, since the daemon's own message says it.
pub(super) async fn connect_engine() -> Result<Engine, String> {
    Engine::open().await.map_err(|e| e.detail())
}

/// What the Docker watcher lets through: the project (ownership label) and the Docker
/// names the desired state wants, set by the loop whenever a desired state loads.
#[derive(Debug, Clone, Default)]
pub(super) struct EventFilter {
    pub project: String,
    /// Container, network and volume names of the desired state.
    pub names: BTreeSet<String>,
}

impl EventFilter {
    pub fn of(d: &DesiredState) -> EventFilter {
        let names = d
            .services
            .keys()
            .map(|s| d.container_name(s))
            .chain(d.networks.keys().map(|n| d.network_docker_name(n)))
            .chain(d.volumes.keys().map(|v| d.volume_docker_name(v)))
            .collect();
        EventFilter {
            project: d.project().to_string(),
            names,
        }
    }
}

/// Whether an engine event concerns this stack, decided before it wakes the loop.
/// Healthcheck probes (`exec_*`) and other objects are noise: at 100 services, or with
/// one restarting bystander, they would keep the loop busy. Owned objects (by the
/// ownership label) always count. An unowned object counts only when it takes or frees
/// a name the desired state wants (a name conflict removed by hand, a network deleted by
/// hand): a container's create, destroy or rename — not its starts, stops or restarts,
/// and not when it merely shares the project's name prefix.
pub(super) fn relevant(ev: &EngineEvent, f: &EventFilter) -> bool {
    if ev.action.starts_with("exec_") {
        return false;
    }
    if labels::owned(&ev.labels, &f.project) {
        return true;
    }
    let wanted = |n: &str| f.names.contains(n.trim_start_matches('/'));
    match ev.kind.as_str() {
        // Network and volume events carry no labels (a volume's name is its ID): one
        // with a wanted name is ours or in our way, whatever happened to it
        // (destroyed, a container disconnected by hand); they are rare.
        "network" => ev.labels.get("name").is_some_and(|n| wanted(n)),
        "volume" => wanted(&ev.id) || ev.labels.get("name").is_some_and(|n| wanted(n)),
        "container" => {
            matches!(ev.action.as_str(), "create" | "destroy" | "rename")
                && ["name", "oldName"]
                    .iter()
                    .any(|k| ev.labels.get(*k).is_some_and(|n| wanted(n)))
        }
        _ => false,
    }
}

/// Connects to the engine, follows its event stream, and reconnects with capped
/// exponential backoff whenever the engine goes away.
pub(super) async fn watch_docker(
    tx: mpsc::Sender<Event>,
    filter: Arc<RwLock<EventFilter>>,
    shutdown: CancellationToken,
) {
    use backon::{BackoffBuilder, ExponentialBuilder};
    let builder = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let mut backoff = builder.build();
    loop {
        let engine = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = connect_engine() => r,
        };
        match engine {
            Ok(e) => {
                backoff = builder.build();
                // Subscribe first, then announce: no event between the two is lost.
                let mut events = Box::pin(e.events());
                if tx.send(Event::DockerUp(e)).await.is_err() {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        n = events.next() => n,
                    };
                    match next {
                        Some(Ok(ev)) => {
                            let ours = relevant(&ev, &filter.read().expect("event filter"));
                            if ours && tx.send(Event::Docker(ev)).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(err)) => {
                            let _ = tx.send(Event::DockerDown(err.to_string())).await;
                            break;
                        }
                        None => {
                            let _ = tx
                                .send(Event::DockerDown("event stream ended".into()))
                                .await;
                            break;
                        }
                    }
                }
            }
            Err(err) => {
                if tx.send(Event::DockerDown(err)).await.is_err() {
                    return;
                }
            }
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(30));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Watches the desired-state directory (recursively: config files count) and sends a
/// debounced `FilesChanged`. Watching the directory, not the files, keeps working when
/// editors save by writing a new file and renaming it over the old one.
pub(super) async fn watch_files(
    dir: PathBuf,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) {
    use notify::{RecursiveMode, Watcher};
    let (ntx, mut nrx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if !matches!(ev.kind, notify::EventKind::Access(_)) {
                let _ = ntx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            error!(error = %e, "cannot watch the desired-state directory; relying on resync and SIGHUP");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::Recursive) {
        error!(error = %e, dir = %dir.display(), "cannot watch the desired-state directory; relying on resync and SIGHUP");
        return;
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = nrx.recv() => if got.is_none() { return },
        }
        let settled = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = settle(&mut nrx, DEBOUNCE_QUIET, DEBOUNCE_MAX_WAIT) => s,
        };
        if !settled || tx.send(Event::FilesChanged).await.is_err() {
            return;
        }
    }
}

/// A burst of file changes is over after this long without another one...
pub(super) const DEBOUNCE_QUIET: Duration = Duration::from_millis(300);
/// ...or at the latest this long after its first change, so saves more often than
/// every `DEBOUNCE_QUIET` cannot hold reloads off.
pub(super) const DEBOUNCE_MAX_WAIT: Duration = Duration::from_secs(2);

/// After a first change: waits until `quiet` passes without another, or `max` after
/// the first, whichever comes first. `false` when the sender is gone.
pub(super) async fn settle(
    rx: &mut mpsc::UnboundedReceiver<()>,
    quiet: Duration,
    max: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + max;
    loop {
        let until = (tokio::time::Instant::now() + quiet).min(deadline);
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
            Ok(Some(())) => return true,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// SIGHUP reloads the desired state; SIGTERM and SIGINT shut down.
pub(super) async fn signals(tx: mpsc::Sender<Event>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hup.recv() => { info!("SIGHUP: reloading desired state"); let _ = tx.send(Event::Reload).await; }
            _ = term.recv() => { shutdown.cancel(); return; }
            _ = int.recv() => { shutdown.cancel(); return; }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str, action: &str, labels: &[(&str, &str)]) -> EngineEvent {
        EngineEvent {
            kind: kind.into(),
            action: action.into(),
            id: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn filter() -> EventFilter {
        EventFilter {
            project: "obs".into(),
            names: ["obs-web", "obs_default", "obs_data"]
                .into_iter()
                .map(String::from)
                .collect(),
        }
    }

    #[test]
    fn owned_events_count_unowned_only_when_they_take_or_free_a_wanted_name() {
        let f = filter();
        let owned = [(labels::STACK, "obs"), ("name", "obs-web")];
        assert!(relevant(&ev("container", "die", &owned), &f));
        assert!(!relevant(&ev("container", "exec_start: true", &owned), &f));
        // A bystander sharing the prefix: never, whatever it does.
        for action in [
            "start", "die", "kill", "pause", "unpause", "create", "destroy",
        ] {
            assert!(
                !relevant(&ev("container", action, &[("name", "obs-noisy")]), &f),
                "{action}"
            );
        }
        // A bystander holding a wanted name: when it takes or frees it.
        let squatter = [("name", "obs-web")];
        assert!(relevant(&ev("container", "destroy", &squatter), &f));
        assert!(relevant(&ev("container", "create", &squatter), &f));
        assert!(!relevant(&ev("container", "start", &squatter), &f));
        assert!(!relevant(&ev("container", "die", &squatter), &f));
        // Renamed away from a wanted name.
        assert!(relevant(
            &ev(
                "container",
                "rename",
                &[("name", "elsewhere"), ("oldName", "/obs-web")]
            ),
            &f
        ));
        assert!(relevant(
            &ev("network", "destroy", &[("name", "obs_default")]),
            &f
        ));
        assert!(!relevant(
            &ev("network", "destroy", &[("name", "obs_other")]),
            &f
        ));
        assert!(relevant(
            &ev("network", "disconnect", &[("name", "obs_default")]),
            &f
        ));
        let mut vol = ev("volume", "destroy", &[("driver", "local")]);
        vol.id = "obs_data".into();
        assert!(relevant(&vol, &f));
        vol.id = "obs_other".into();
        assert!(!relevant(&vol, &f));
        // Another project's owned objects.
        assert!(!relevant(
            &ev(
                "container",
                "die",
                &[(labels::STACK, "other"), ("name", "obs-web2")]
            ),
            &f
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_settles_after_quiet() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let start = tokio::time::Instant::now();
        tx.send(()).unwrap();
        rx.recv().await;
        assert!(settle(&mut rx, DEBOUNCE_QUIET, DEBOUNCE_MAX_WAIT).await);
        assert_eq!(start.elapsed(), DEBOUNCE_QUIET);
    }

    #[tokio::test(start_paused = true)]
    async fn debounce_has_a_maximum_wait() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        // A save every 100 ms, for 10 s: more often than the quiet period.
        let saver = tokio::spawn(async move {
            for _ in 0..100 {
                let _ = tx.send(());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        rx.recv().await;
        let start = tokio::time::Instant::now();
        assert!(settle(&mut rx, DEBOUNCE_QUIET, DEBOUNCE_MAX_WAIT).await);
        let waited = start.elapsed();
        assert!(
            waited >= DEBOUNCE_MAX_WAIT && waited < DEBOUNCE_MAX_WAIT + DEBOUNCE_QUIET,
            "settled after {waited:?}"
        );
        saver.abort();
    }
}
