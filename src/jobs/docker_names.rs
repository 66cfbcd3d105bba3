//! docker-names (LLD section 7): `container_name_info{short_id,name} 1` per running
//! container, so dashboards can join cAdvisor's cgroup-keyed series
//! (`docker-<id>.scope`) to container names.
//!
//! Cheap and idempotent: one container list, one small file. The daemon runs it on its
//! schedule and triggers it on container events.

use super::clock::unix_seconds;
use super::textfile::Textfile;
use super::{JobContext, JobError};
use crate::desired::model::job::DockerNamesJob;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// Length of the short container ID, as `docker ps` prints it and the join expects.
const SHORT_ID_LEN: usize = 12;

pub async fn run(
    ctx: &JobContext,
    job: &DockerNamesJob,
    _cancel: &CancellationToken,
) -> Result<(), JobError> {
    let dir = ctx.textfile_dir()?;
    let containers = ctx.containers.list().await.map_err(|e| {
        JobError::Failed(format!(
            "listing containers: {}",
            super::error_chain(e.as_ref())
        ))
    })?;
    let tf = render(&containers, unix_seconds(ctx.clock.now()));
    tf.write(dir, &job.textfile)?;
    Ok(())
}

/// The textfile for a container list (sorted by short ID; one series per short ID).
pub fn render(containers: &[(String, String)], now_unix: f64) -> Textfile {
    let mut by_short: BTreeMap<String, String> = BTreeMap::new();
    for (id, name) in containers {
        let short: String = id.chars().take(SHORT_ID_LEN).collect();
        let name = name.trim_start_matches('/');
        if short.is_empty() || name.is_empty() {
            continue;
        }
        by_short.entry(short).or_insert_with(|| name.to_string());
    }
    let mut tf = Textfile::new();
    let info = tf.gauge(
        "container_name_info",
        "Container name by short container ID (join with cAdvisor's id label).",
    );
    for (short, name) in &by_short {
        info.sample(&[("short_id", short), ("name", name)], 1.0);
    }
    tf.gauge(
        "docker_names_last_run_timestamp_seconds",
        "Unix time the docker-names job last wrote this file.",
    )
    .set(now_unix);
    tf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_and_names() {
        let list = vec![
            (
                "0123456789abcdef0123".to_string(),
                "/obs-grafana".to_string(),
            ),
            ("fedcba9876543210".to_string(), "obs-prometheus".to_string()),
            ("0123456789abXXXX".to_string(), "/dup-short-id".to_string()),
            ("".to_string(), "/no-id".to_string()),
        ];
        let text = render(&list, 5.0).render().unwrap();
        assert_eq!(
            text,
            "# HELP container_name_info Container name by short container ID (join with cAdvisor's id label).\n\
             # TYPE container_name_info gauge\n\
             container_name_info{short_id=\"0123456789ab\",name=\"obs-grafana\"} 1\n\
             container_name_info{short_id=\"fedcba987654\",name=\"obs-prometheus\"} 1\n\
             # HELP docker_names_last_run_timestamp_seconds Unix time the docker-names job last wrote this file.\n\
             # TYPE docker_names_last_run_timestamp_seconds gauge\n\
             docker_names_last_run_timestamp_seconds 5\n"
        );
    }
}
