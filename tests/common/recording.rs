//! `Recording`: a `Docker` implementation over the real engine that records every call
//! and can "crash" at a chosen write, for the crash-consistency and steady-state tests.

use obsd::docker::engine::Engine;
use obsd::docker::{
    ContainerInfo, ContainerState, CreateContainer, Docker, EngineEvent, NetworkInfo,
    Result as DResult, VolumeInfo,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Delegates to the real engine and records every method called. With a write budget
/// it "crashes" at the first write past the budget: that call never returns (and never
/// reaches the engine), `cut` is notified, and the test drops the pass — from the
/// engine's point of view exactly what a kill -9 between two API calls leaves behind.
pub struct Recording {
    inner: Engine,
    calls: Mutex<Vec<&'static str>>,
    writes_left: AtomicUsize,
    pub cut: tokio::sync::Notify,
}

/// Methods that change the engine.
pub const WRITES: &[&str] = &[
    "pull_image",
    "create_volume",
    "remove_volume",
    "create_network",
    "remove_network",
    "create_container",
    "start_container",
    "stop_container",
    "restart_container",
    "kill_container",
    "remove_container",
    "rename_container",
    "disconnect_network",
    "exec",
    "pause_container",
    "unpause_container",
    "upload_archive",
];

impl Recording {
    pub fn new(inner: Engine) -> Recording {
        Recording::cut_after(inner, usize::MAX)
    }

    pub fn cut_after(inner: Engine, writes: usize) -> Recording {
        Recording {
            inner,
            calls: Mutex::new(Vec::new()),
            writes_left: AtomicUsize::new(writes),
            cut: tokio::sync::Notify::new(),
        }
    }

    fn note(&self, m: &'static str) {
        self.calls.lock().expect("calls").push(m);
    }

    async fn gate(&self, m: &'static str) {
        if WRITES.contains(&m)
            && self
                .writes_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_err()
        {
            self.cut.notify_one();
            std::future::pending::<()>().await;
        }
        self.note(m);
    }
    pub fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().expect("calls"))
    }
}

impl Docker for Recording {
    async fn ping(&self) -> DResult<()> {
        self.gate("ping").await;
        self.inner.ping().await
    }
    async fn list_all_containers(&self) -> DResult<Vec<ContainerInfo>> {
        self.gate("list_all_containers").await;
        self.inner.list_all_containers().await
    }
    async fn image_id(&self, reference: &str) -> DResult<Option<String>> {
        self.gate("image_id").await;
        self.inner.image_id(reference).await
    }
    async fn inspect_image(&self, reference: &str) -> DResult<Option<obsd::docker::LocalImage>> {
        self.gate("inspect_image").await;
        self.inner.inspect_image(reference).await
    }
    async fn pull_image(&self, reference: &str) -> DResult<()> {
        self.gate("pull_image").await;
        self.inner.pull_image(reference).await
    }
    async fn list_volumes(&self) -> DResult<Vec<VolumeInfo>> {
        self.gate("list_volumes").await;
        self.inner.list_volumes().await
    }
    async fn create_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> DResult<()> {
        self.gate("create_volume").await;
        self.inner.create_volume(name, driver, labels).await
    }
    async fn remove_volume(&self, name: &str) -> DResult<()> {
        self.gate("remove_volume").await;
        self.inner.remove_volume(name).await
    }
    async fn list_networks(&self) -> DResult<Vec<NetworkInfo>> {
        self.gate("list_networks").await;
        self.inner.list_networks().await
    }
    async fn create_network(
        &self,
        name: &str,
        driver: Option<&str>,
        internal: bool,
        labels: &BTreeMap<String, String>,
    ) -> DResult<()> {
        self.gate("create_network").await;
        self.inner
            .create_network(name, driver, internal, labels)
            .await
    }
    async fn remove_network(&self, name: &str) -> DResult<()> {
        self.gate("remove_network").await;
        self.inner.remove_network(name).await
    }
    async fn inspect_state(&self, id: &str) -> DResult<ContainerState> {
        self.gate("inspect_state").await;
        self.inner.inspect_state(id).await
    }
    async fn exec(&self, id: &str, cmd: &[String]) -> DResult<(i64, String)> {
        self.gate("exec").await;
        self.inner.exec(id, cmd).await
    }
    async fn container_logs(&self, id: &str, tail: usize) -> DResult<String> {
        self.gate("container_logs").await;
        self.inner.container_logs(id, tail).await
    }
    async fn create_container(&self, spec: &CreateContainer) -> DResult<String> {
        self.gate("create_container").await;
        self.inner.create_container(spec).await
    }
    async fn start_container(&self, id: &str) -> DResult<()> {
        self.gate("start_container").await;
        self.inner.start_container(id).await
    }
    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> DResult<()> {
        self.gate("stop_container").await;
        self.inner.stop_container(id, timeout_secs).await
    }
    async fn restart_container(&self, id: &str, timeout_secs: Option<i64>) -> DResult<()> {
        self.gate("restart_container").await;
        self.inner.restart_container(id, timeout_secs).await
    }
    async fn kill_container(&self, id: &str, signal: &str) -> DResult<()> {
        self.gate("kill_container").await;
        self.inner.kill_container(id, signal).await
    }
    async fn remove_container(&self, id: &str) -> DResult<()> {
        self.gate("remove_container").await;
        self.inner.remove_container(id).await
    }
    async fn rename_container(&self, id: &str, new_name: &str) -> DResult<()> {
        self.gate("rename_container").await;
        self.inner.rename_container(id, new_name).await
    }
    async fn disconnect_network(&self, network: &str, id: &str) -> DResult<()> {
        self.gate("disconnect_network").await;
        self.inner.disconnect_network(network, id).await
    }
    async fn containers_using_volume(&self, volume: &str) -> DResult<Vec<ContainerInfo>> {
        self.gate("containers_using_volume").await;
        self.inner.containers_using_volume(volume).await
    }
    async fn pause_container(&self, id: &str) -> DResult<()> {
        self.gate("pause_container").await;
        self.inner.pause_container(id).await
    }
    async fn unpause_container(&self, id: &str) -> DResult<()> {
        self.gate("unpause_container").await;
        self.inner.unpause_container(id).await
    }
    fn download_archive(
        &self,
        id: &str,
        path: &str,
    ) -> impl futures_util::Stream<Item = DResult<bytes::Bytes>> + Send + 'static {
        self.note("download_archive");
        self.inner.download_archive(id, path)
    }
    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        tar: impl futures_util::Stream<Item = bytes::Bytes> + Send + 'static,
    ) -> DResult<()> {
        self.gate("upload_archive").await;
        self.inner.upload_archive(id, path, tar).await
    }
    fn events(&self) -> impl futures_util::Stream<Item = DResult<EngineEvent>> + Send + 'static {
        self.note("events");
        self.inner.events()
    }
}

// ------------------------------------------------------------ library-level crash rig

/// What the crash-cut tests share: the state as a library caller holds it (desired
/// state loaded from a `Stack`'s directory, the host key, the persisted records) and a
/// negotiated engine to wrap in `Recording`s.
pub struct Rig {
    pub engine: Engine,
    pub key: obsd::secret::HostKey,
    pub persisted: obsd::state::Persisted,
}

/// Loads the stack's directory as the daemon would (panics with the diagnostics).
pub fn load(stack: &super::Stack) -> obsd::desired::DesiredState {
    obsd::desired::load::load_dir(&stack.dir, &obsd::desired::load::LoadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `body` on a current-thread runtime with a fresh `Rig` whose host key lives in
/// `state_dir` (a `Stack`'s).
pub fn with_rig(state_dir: &std::path::Path, body: impl AsyncFnOnce(&mut Rig)) {
    let key = obsd::state::host_key(state_dir).expect("host key");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let engine = Engine::connect()
            .expect("engine")
            .negotiate()
            .await
            .expect("negotiate");
        let mut rig = Rig {
            engine,
            key,
            persisted: obsd::state::Persisted::default(),
        };
        body(&mut rig).await;
    });
}

impl Rig {
    /// Passes (at most `max`) until the plan is empty; returns the writes made. With
    /// `strict`, a pass that reports a failure fails the test (a rollback is a failure
    /// of the pass, so rollout tests are not strict).
    pub async fn converge(
        &mut self,
        desired: &obsd::desired::DesiredState,
        max: usize,
        strict: bool,
    ) -> Vec<&'static str> {
        let docker = Recording::new(self.engine.clone());
        let mut writes = Vec::new();
        for _ in 0..max {
            let p = obsd::reconcile::pass(
                &docker,
                desired,
                &self.key,
                &mut self.persisted,
                true,
                false,
            )
            .await
            .expect("pass");
            assert!(!strict || !p.failed(), "pass failed: {:?}", p.report);
            writes.extend(docker.take().into_iter().filter(|c| WRITES.contains(c)));
            if p.plan.is_noop() {
                return writes;
            }
        }
        panic!("no convergence in {max} passes; writes: {writes:?}");
    }

    /// A pass that "crashes" at write number `cut + 1` (never reaching the engine);
    /// returns the writes made before the crash. The pass must not end by itself.
    pub async fn cut_pass(
        &mut self,
        desired: &obsd::desired::DesiredState,
        cut: usize,
    ) -> Vec<&'static str> {
        let rec = Recording::cut_after(self.engine.clone(), cut);
        tokio::select! {
            r = obsd::reconcile::pass(&rec, desired, &self.key, &mut self.persisted, true, false) => {
                panic!("the pass ended before write #{}: {:?}", cut + 1, r.map(|p| p.report))
            }
            _ = rec.cut.notified() => {}
        }
        rec.take()
            .into_iter()
            .filter(|c| WRITES.contains(c))
            .collect()
    }
}
