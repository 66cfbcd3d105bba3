//! The daemon's inputs: the desired-state directory, the Docker event stream and
//! signals, each a task that turns what it sees into an [`Event`] and never acts itself.

use super::Event;
use crate::docker::engine::Engine;
use crate::docker::{labels, Docker, EngineEvent};
use futures_util::StreamExt;
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

/// Whether an engine event concerns this stack. Healthcheck probes (`exec_*`) and other
/// projects' objects are noise: at 100 services they would keep the loop busy.
pub(super) fn relevant(ev: &EngineEvent, project: &str) -> bool {
    if ev.action.starts_with("exec_") {
        return false;
    }
    if labels::owned(&ev.labels, project) {
        return true;
    }
    // Unowned objects matter when they hold (or free) one of our names: a name
    // conflict removed by hand, a network deleted by hand.
    let prefix = match ev.kind.as_str() {
        "container" => format!("{project}-"),
        "network" | "volume" => format!("{project}_"),
        _ => return false,
    };
    ev.labels
        .get("name")
        .is_some_and(|n| n.starts_with(&prefix))
}

/// Connects to the engine, follows its event stream, and reconnects with capped
/// exponential backoff whenever the engine goes away.
pub(super) async fn watch_docker(
    tx: mpsc::Sender<Event>,
    project: Arc<RwLock<String>>,
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
                            let ours = relevant(&ev, &project.read().expect("project"));
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
        // Debounce: wait until the burst of writes is over.
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                more = tokio::time::timeout(Duration::from_millis(300), nrx.recv()) => match more {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                },
            }
        }
        if tx.send(Event::FilesChanged).await.is_err() {
            return;
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
