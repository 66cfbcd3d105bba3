//! An in-memory engine that records every call, for planner/executor unit tests:
//! "a no-op reconcile makes no write calls" is asserted against [`FakeDocker::writes`].

use super::*;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    containers: Vec<ContainerInfo>,
    images: BTreeMap<String, String>,
    volumes: Vec<VolumeInfo>,
    networks: Vec<NetworkInfo>,
    calls: Vec<String>,
    next_id: u64,
    /// Image references whose pull fails (registry unreachable).
    broken_pulls: Vec<String>,
}

#[derive(Default)]
pub struct FakeDocker {
    inner: Mutex<Inner>,
}

const READS: &[&str] = &[
    "ping",
    "list_containers_labeled",
    "container_by_name",
    "list_all_containers",
    "image_id",
    "inspect_image",
    "list_volumes",
    "list_networks",
    "inspect_state",
    "container_logs",
    "containers_using_volume",
    "download_archive",
];

impl FakeDocker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes an image available locally.
    pub fn add_image(&self, reference: &str, id: &str) {
        self.inner
            .lock()
            .unwrap()
            .images
            .insert(reference.to_string(), id.to_string());
    }

    /// Makes pulls of `reference` fail.
    pub fn break_pull(&self, reference: &str) {
        self.inner
            .lock()
            .unwrap()
            .broken_pulls
            .push(reference.to_string());
    }

    /// Adds a container that obsd did not create (or simulates out-of-band changes).
    pub fn add_container(&self, c: ContainerInfo) {
        self.inner.lock().unwrap().containers.push(c);
    }

    pub fn containers(&self) -> Vec<ContainerInfo> {
        self.inner.lock().unwrap().containers.clone()
    }

    pub fn volumes(&self) -> Vec<VolumeInfo> {
        self.inner.lock().unwrap().volumes.clone()
    }

    /// Mutates a container by name (e.g. to simulate `docker stop`).
    pub fn with_container(&self, name: &str, f: impl FnOnce(&mut ContainerInfo)) {
        let mut g = self.inner.lock().unwrap();
        if let Some(c) = g.containers.iter_mut().find(|c| c.name == name) {
            f(c);
        }
    }

    /// Removes a container by name (simulates `docker rm -f`).
    pub fn remove_by_name(&self, name: &str) {
        self.inner
            .lock()
            .unwrap()
            .containers
            .retain(|c| c.name != name);
    }

    /// Every call so far, as `method arg`.
    pub fn calls(&self) -> Vec<String> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Calls that change the engine.
    pub fn writes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| !READS.iter().any(|r| c.split(' ').next() == Some(r)))
            .collect()
    }

    pub fn clear_calls(&self) {
        self.inner.lock().unwrap().calls.clear();
    }

    fn record(&self, call: String) {
        self.inner.lock().unwrap().calls.push(call);
    }

    fn set_state(&self, id: &str, state: RunState) {
        let mut g = self.inner.lock().unwrap();
        if let Some(c) = g.containers.iter_mut().find(|c| c.id == id) {
            c.state = state;
        }
    }
}

impl Docker for FakeDocker {
    async fn ping(&self) -> Result<()> {
        self.record("ping".into());
        Ok(())
    }

    async fn list_all_containers(&self) -> Result<Vec<ContainerInfo>> {
        self.record("list_all_containers".into());
        Ok(self.containers())
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        self.record(format!("image_id {reference}"));
        Ok(self.inner.lock().unwrap().images.get(reference).cloned())
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<LocalImage>> {
        self.record(format!("inspect_image {reference}"));
        let g = self.inner.lock().unwrap();
        Ok(g.images.get(reference).map(|id| LocalImage {
            id: id.clone(),
            repo_digests: Vec::new(),
        }))
    }

    async fn pull_image(&self, reference: &str) -> Result<()> {
        self.record(format!("pull_image {reference}"));
        let mut g = self.inner.lock().unwrap();
        if g.broken_pulls.iter().any(|b| b == reference) {
            return Err(DockerError::Image {
                image: reference.into(),
                message: "pull failed: registry unreachable".into(),
            });
        }
        if !g.images.contains_key(reference) {
            let id = format!("sha256:pulled-{reference}");
            g.images.insert(reference.to_string(), id);
        }
        Ok(())
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.record("list_volumes".into());
        Ok(self.volumes())
    }

    async fn create_volume(
        &self,
        name: &str,
        _driver: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.record(format!("create_volume {name}"));
        self.inner.lock().unwrap().volumes.push(VolumeInfo {
            name: name.into(),
            labels: labels.clone(),
            mountpoint: format!("/var/lib/docker/volumes/{name}/_data"),
        });
        Ok(())
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.record(format!("remove_volume {name}"));
        self.inner
            .lock()
            .unwrap()
            .volumes
            .retain(|v| v.name != name);
        Ok(())
    }

    async fn list_networks(&self) -> Result<Vec<NetworkInfo>> {
        self.record("list_networks".into());
        Ok(self.inner.lock().unwrap().networks.clone())
    }

    async fn create_network(
        &self,
        name: &str,
        _driver: Option<&str>,
        _internal: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        self.record(format!("create_network {name}"));
        let mut g = self.inner.lock().unwrap();
        g.next_id += 1;
        let id = format!("net{}", g.next_id);
        g.networks.push(NetworkInfo {
            id,
            name: name.into(),
            labels: labels.clone(),
        });
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.record(format!("remove_network {name}"));
        self.inner
            .lock()
            .unwrap()
            .networks
            .retain(|n| n.name != name);
        Ok(())
    }

    async fn create_container(&self, spec: &CreateContainer) -> Result<String> {
        self.record(format!("create_container {}", spec.name));
        let mut g = self.inner.lock().unwrap();
        if g.containers.iter().any(|c| c.name == spec.name) {
            return Err(DockerError::Conflict(format!("name {} in use", spec.name)));
        }
        let Some(image_id) = g.images.get(&spec.image).cloned() else {
            return Err(DockerError::Image {
                image: spec.image.clone(),
                message: "No such image".into(),
            });
        };
        g.next_id += 1;
        let id = format!("{:064x}", g.next_id);
        g.containers.push(ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id,
            labels: spec.labels.clone(),
            state: RunState::Created,
            health: None,
            status: "Created".into(),
            ips: BTreeMap::new(),
        });
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        self.record(format!("start_container {}", short(id)));
        let mut g = self.inner.lock().unwrap();
        let c = g
            .containers
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| DockerError::NotFound(id.into()))?;
        c.state = RunState::Running;
        c.status = "Up 1 second".into();
        Ok(())
    }

    async fn stop_container(&self, id: &str, _t: Option<i64>) -> Result<()> {
        self.record(format!("stop_container {}", short(id)));
        let mut g = self.inner.lock().unwrap();
        if let Some(c) = g.containers.iter_mut().find(|c| c.id == id) {
            c.state = RunState::Exited;
        }
        Ok(())
    }

    async fn restart_container(&self, id: &str, _t: Option<i64>) -> Result<()> {
        self.record(format!("restart_container {}", short(id)));
        let mut g = self.inner.lock().unwrap();
        if let Some(c) = g.containers.iter_mut().find(|c| c.id == id) {
            c.state = RunState::Running;
        }
        Ok(())
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        self.record(format!("kill_container {} {signal}", short(id)));
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        self.record(format!("remove_container {}", short(id)));
        self.inner.lock().unwrap().containers.retain(|c| c.id != id);
        Ok(())
    }

    async fn rename_container(&self, id: &str, new_name: &str) -> Result<()> {
        self.record(format!("rename_container {} {new_name}", short(id)));
        let mut g = self.inner.lock().unwrap();
        if g.containers.iter().any(|c| c.name == new_name) {
            return Err(DockerError::Conflict(format!("name {new_name} in use")));
        }
        if let Some(c) = g.containers.iter_mut().find(|c| c.id == id) {
            c.name = new_name.to_string();
        }
        Ok(())
    }

    async fn disconnect_network(&self, network: &str, id: &str) -> Result<()> {
        self.record(format!("disconnect_network {network} {}", short(id)));
        Ok(())
    }

    async fn inspect_state(&self, id: &str) -> Result<ContainerState> {
        self.record(format!("inspect_state {}", short(id)));
        let g = self.inner.lock().unwrap();
        let c = g
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| DockerError::NotFound(id.into()))?;
        Ok(ContainerState {
            state: c.state,
            exit_code: 0,
            health: c.health,
            restart_count: 0,
            error: None,
        })
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<(i64, String)> {
        self.record(format!("exec {} {}", short(id), cmd.join(" ")));
        Ok((0, String::new()))
    }

    async fn container_logs(&self, id: &str, _tail: usize) -> Result<String> {
        self.record(format!("container_logs {}", short(id)));
        Ok(String::new())
    }

    async fn containers_using_volume(&self, volume: &str) -> Result<Vec<ContainerInfo>> {
        self.record(format!("containers_using_volume {volume}"));
        Ok(Vec::new())
    }

    async fn pause_container(&self, id: &str) -> Result<()> {
        self.record(format!("pause_container {}", short(id)));
        self.set_state(id, RunState::Paused);
        Ok(())
    }

    async fn unpause_container(&self, id: &str) -> Result<()> {
        self.record(format!("unpause_container {}", short(id)));
        self.set_state(id, RunState::Running);
        Ok(())
    }

    fn download_archive(
        &self,
        id: &str,
        path: &str,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes>> + Send + 'static {
        self.record(format!("download_archive {} {path}", short(id)));
        futures_util::stream::iter(vec![Err(DockerError::Api(
            "the fake engine holds no files".into(),
        ))])
    }

    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        _tar: impl futures_util::Stream<Item = bytes::Bytes> + Send + 'static,
    ) -> Result<()> {
        self.record(format!("upload_archive {} {path}", short(id)));
        Ok(())
    }

    fn events(&self) -> impl futures_util::Stream<Item = Result<EngineEvent>> + Send + 'static {
        futures_util::stream::pending()
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
