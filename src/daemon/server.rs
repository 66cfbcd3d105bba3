//! The daemon's two servers: `/metrics` + `/healthz` on TCP, and the obsctl API on a
//! unix socket. Both read [`Shared`]; the API's only writes are events to the loop.

use super::{Event, Shared};
use crate::api::wire;
use crate::jobs::TriggerError;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::Json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Binds `addr` and returns the server future (bind errors surface at start-up).
pub(super) async fn serve_metrics(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, String> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    info!(%addr, "serving /metrics and /healthz");
    if addr.ip().is_unspecified() {
        tracing::warn!(%addr, "/metrics is served on every interface; bind loopback and the Docker bridge address instead (see the README)");
    }
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(|State(s): State<Arc<Shared>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    crate::daemon::metrics::encode(&s.registry),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared);
    Ok(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    })
}

type ApiState = State<(Arc<Shared>, mpsc::Sender<Event>)>;

fn api_error(status: StatusCode, e: impl ToString) -> (StatusCode, Json<wire::ApiError>) {
    (
        status,
        Json(wire::ApiError {
            error: e.to_string(),
        }),
    )
}

/// Binds the unix socket (mode 0600) and returns the server future.
pub(super) async fn serve_api(
    socket: &Path,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Event>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()>, String> {
    use axum::routing::{get, post};
    use std::os::unix::fs::PermissionsExt;
    // We hold the state-directory lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod {}: {e}", socket.display()))?;
    info!(socket = %socket.display(), "serving the obsctl API");
    let app = axum::Router::new()
        .route(wire::STATUS, get(status))
        .route(wire::JOBS, get(jobs))
        .route("/v1/jobs/{name}/run", post(run_job))
        .route(wire::RECONCILE, post(reconcile))
        .route("/v1/rollout/{name}", get(rollout_status))
        .route("/v1/rollout/{name}/retry", post(rollout_retry))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state((shared, tx));
    Ok(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    })
}

async fn status(State((s, _)): ApiState) -> Json<wire::Status> {
    let mut status = s.status.read().expect("status").clone();
    // The specs of past rollouts are for `obsctl rollout undo` (the rollout API);
    // `obsctl status` stays small.
    for r in &mut status.resources {
        for e in &mut r.rollouts {
            e.spec = None;
        }
    }
    status.jobs = s
        .jobs
        .status()
        .into_iter()
        .map(wire::JobSummary::of)
        .collect();
    status.judge();
    Json(status)
}

async fn jobs(State((s, _)): ApiState) -> Json<wire::JobList> {
    Json(wire::JobList {
        jobs: s.jobs.status(),
    })
}

async fn reconcile(State((_, tx)): ApiState) -> Json<wire::Queued> {
    let _ = tx.send(Event::ApiReconcile).await;
    Json(wire::Queued { queued: true })
}

/// The Service's status row, 404 when there is no such Service.
fn service_row(
    s: &Shared,
    name: &str,
) -> Result<crate::reconcile::StatusRow, (StatusCode, Json<wire::ApiError>)> {
    s.status
        .read()
        .expect("status")
        .resources
        .iter()
        .find(|r| {
            r.resource.kind == crate::desired::model::Kind::Service && r.resource.name == name
        })
        .cloned()
        .ok_or_else(|| api_error(StatusCode::NOT_FOUND, format!("no Service {name}")))
}

fn has(row: &crate::reconcile::StatusRow, reason: crate::reconcile::plan::Reason) -> bool {
    row.resource.drift.contains(&reason)
}

/// A spec is held: rolled back, refused by its check, or stopped after a crash loop.
fn is_held(row: &crate::reconcile::StatusRow) -> bool {
    use crate::reconcile::plan::Reason;
    [
        Reason::RolledBack,
        Reason::PreflightFailed,
        Reason::CrashLoop,
    ]
    .into_iter()
    .any(|r| has(row, r))
}

/// `GET /v1/rollout/{name}`.
async fn rollout_status(
    State((s, _)): ApiState,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<wire::RolloutStatus>, (StatusCode, Json<wire::ApiError>)> {
    let status = service_row(&s, &name)?;
    Ok(Json(wire::RolloutStatus {
        service: name,
        rolled_back: has(&status, crate::reconcile::plan::Reason::RolledBack),
        held: is_held(&status),
        status,
    }))
}

/// `POST /v1/rollout/{name}/retry`: the next pass (queued now) forgets the rollback and
/// tries the spec again.
async fn rollout_retry(
    State((s, tx)): ApiState,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<wire::RolloutRetry>, (StatusCode, Json<wire::ApiError>)> {
    let row = service_row(&s, &name)?;
    s.rollout_retries
        .lock()
        .expect("retries")
        .insert(name.clone());
    let _ = tx.send(Event::ApiReconcile).await;
    Ok(Json(wire::RolloutRetry {
        service: name,
        held: is_held(&row),
        queued: true,
    }))
}

#[derive(serde::Deserialize)]
struct RunQuery {
    #[serde(default)]
    wait: bool,
}

/// `POST /v1/jobs/{name}/run[?wait=true]`: 200 with the run (or its queueing), 404 for
/// an unknown job, 503 while shutting down, 409 when a waited-for run was dropped.
async fn run_job(
    State((s, _)): ApiState,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RunQuery>,
) -> Result<axum::response::Response, (StatusCode, Json<wire::ApiError>)> {
    use axum::response::IntoResponse;
    let handle = s.jobs.trigger(&name).map_err(|e| match e {
        TriggerError::UnknownJob(_) => api_error(StatusCode::NOT_FOUND, e),
        e => api_error(StatusCode::SERVICE_UNAVAILABLE, e),
    })?;
    if !q.wait {
        return Ok(Json(wire::RunQueued {
            job: name,
            queued: handle.queued,
        })
        .into_response());
    }
    let r = handle
        .wait()
        .await
        .map_err(|e| api_error(StatusCode::CONFLICT, e))?;
    Ok(Json(wire::RunFinished {
        job: name,
        result: r.result,
        duration_seconds: r.duration_seconds,
        error: r.error,
    })
    .into_response())
}
