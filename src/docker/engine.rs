//! The real engine, through bollard. The only file that imports bollard.

use super::*;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, DeviceMapping, EndpointSettings, HostConfig,
    HostConfigLogConfig, MountBindOptions, MountBindOptionsPropagationEnum, MountType,
    NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters as qp;
use futures_util::{Stream, StreamExt, TryStreamExt};
use std::collections::HashMap;

/// A connection to the Docker engine (`DOCKER_HOST` or the default socket).
#[derive(Clone)]
pub struct Engine {
    docker: bollard::Docker,
}

impl Engine {
    /// Connects lazily (no request is made) — use [`Engine::negotiate`] to talk once and
    /// settle the API version.
    pub fn connect() -> Result<Engine> {
        let docker = bollard::Docker::connect_with_defaults()
            .map_err(|e| DockerError::Unreachable(e.to_string()))?;
        Ok(Engine { docker })
    }

    /// Negotiates the API version with the engine (Docker 20.10 speaks 1.41).
    pub async fn negotiate(self) -> Result<Engine> {
        let docker = self.docker.negotiate_version().await.map_err(map_err)?;
        Ok(Engine { docker })
    }

    /// Connects, negotiates and pings within 10 s: the one way the daemon and obsctl
    /// open the engine, so both fail the same way when it does not answer.
    pub async fn open() -> Result<Engine> {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            let e = Engine::connect()?.negotiate().await?;
            e.ping().await?;
            Ok::<_, DockerError>(e)
        })
        .await
        .map_err(|_| DockerError::Unreachable("timed out".into()))??;
        Ok(e)
    }
}

fn map_err(e: bollard::errors::Error) -> DockerError {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => DockerError::NotFound(message),
            409 => DockerError::Conflict(message),
            _ => DockerError::Api(format!("{status_code}: {message}")),
        },
        E::IOError { err } => DockerError::Unreachable(err.to_string()),
        E::HyperResponseError { err } => DockerError::Unreachable(err.to_string()),
        E::SocketNotFoundError(s) => DockerError::Unreachable(format!("socket {s} not found")),
        E::RequestTimeoutError => DockerError::Unreachable("request timed out".into()),
        other => {
            // bollard's top-level message hides the cause ("client error (Connect)").
            let mut s = other.to_string();
            let mut cause = std::error::Error::source(&other);
            while let Some(c) = cause {
                let text = c.to_string();
                if !s.ends_with(&text) {
                    s.push_str(&format!(": {text}"));
                }
                cause = c.source();
            }
            if s.contains("onnection refused")
                || s.contains("No such file")
                || s.contains("error trying to connect")
            {
                DockerError::Unreachable(s)
            } else {
                DockerError::Api(s)
            }
        }
    }
}

fn to_btree(m: Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    m.unwrap_or_default().into_iter().collect()
}

fn summary(c: bollard::models::ContainerSummary) -> ContainerInfo {
    let status = c.status.unwrap_or_default();
    let ips = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(net, ep)| {
            ep.ip_address
                .filter(|ip| !ip.is_empty())
                .map(|ip| (net, ip))
        })
        .collect();
    ContainerInfo {
        id: c.id.unwrap_or_default(),
        name: c
            .names
            .and_then(|n| n.into_iter().next())
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: c.image.unwrap_or_default(),
        image_id: c.image_id.unwrap_or_default(),
        labels: to_btree(c.labels),
        state: match c.state {
            Some(ContainerSummaryStateEnum::RUNNING) => RunState::Running,
            Some(ContainerSummaryStateEnum::PAUSED) => RunState::Paused,
            Some(ContainerSummaryStateEnum::RESTARTING) => RunState::Restarting,
            Some(ContainerSummaryStateEnum::REMOVING) => RunState::Removing,
            Some(ContainerSummaryStateEnum::EXITED) => RunState::Exited,
            Some(ContainerSummaryStateEnum::DEAD) => RunState::Dead,
            _ => RunState::Created,
        },
        health: health_from_status(&status),
        status,
        ips,
    }
}

impl Engine {
    async fn list(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<ContainerInfo>> {
        let opts = qp::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(map_err)?;
        Ok(list.into_iter().map(summary).collect())
    }
}

impl Docker for Engine {
    async fn ping(&self) -> Result<()> {
        self.docker.ping().await.map(|_| ()).map_err(map_err)
    }

    async fn list_all_containers(&self) -> Result<Vec<ContainerInfo>> {
        self.list(HashMap::new()).await
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(e) => match map_err(e) {
                DockerError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<LocalImage>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(LocalImage {
                id: i.id.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
            })),
            Err(e) => match map_err(e) {
                DockerError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn pull_image(&self, reference: &str) -> Result<()> {
        let opts = qp::CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| DockerError::Image {
                image: reference.to_string(),
                message: format!("cannot pull: {}", map_err(e)),
            })?;
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(DockerError::Image {
                    image: reference.to_string(),
                    message: format!("cannot pull: {err}"),
                });
            }
        }
        Ok(())
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let r = self
            .docker
            .list_volumes(None::<qp::ListVolumesOptions>)
            .await
            .map_err(map_err)?;
        Ok(r.volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeInfo {
                name: v.name,
                labels: v.labels.into_iter().collect(),
                mountpoint: v.mountpoint,
            })
            .collect())
    }

    async fn create_volume(
        &self,
        name: &str,
        driver: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let req = VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: driver.map(str::to_string),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.docker
            .remove_volume(name, None::<qp::RemoveVolumeOptions>)
            .await
            .map_err(map_err)
    }

    async fn list_networks(&self) -> Result<Vec<NetworkInfo>> {
        let r = self
            .docker
            .list_networks(None::<qp::ListNetworksOptions>)
            .await
            .map_err(map_err)?;
        Ok(r.into_iter()
            .map(|n| NetworkInfo {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: to_btree(n.labels),
            })
            .collect())
    }

    async fn create_network(
        &self,
        name: &str,
        driver: Option<&str>,
        internal: bool,
        labels: &BTreeMap<String, String>,
    ) -> Result<()> {
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: driver.map(str::to_string),
            internal: Some(internal),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.docker
            .create_network(req)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.docker.remove_network(name).await.map_err(map_err)
    }

    async fn create_container(&self, s: &CreateContainer) -> Result<String> {
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = {
            let mut m: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
            for p in &s.port_bindings {
                m.entry(p.container_port.clone())
                    .or_insert_with(|| Some(Vec::new()))
                    .get_or_insert_with(Vec::new)
                    .push(PortBinding {
                        host_ip: p.host_ip.clone(),
                        host_port: Some(p.host_port.to_string()),
                    });
            }
            m
        };
        let mounts = s
            .mounts
            .iter()
            .map(|m| bollard::models::Mount {
                target: Some(m.target.clone()),
                source: Some(m.source.clone()),
                typ: Some(match m.kind {
                    "volume" => MountType::VOLUME,
                    "tmpfs" => MountType::TMPFS,
                    _ => MountType::BIND,
                }),
                read_only: Some(m.read_only),
                bind_options: m.propagation.as_deref().map(|p| MountBindOptions {
                    propagation: Some(match p {
                        "private" => MountBindOptionsPropagationEnum::PRIVATE,
                        "shared" => MountBindOptionsPropagationEnum::SHARED,
                        "rshared" => MountBindOptionsPropagationEnum::RSHARED,
                        "slave" => MountBindOptionsPropagationEnum::SLAVE,
                        "rslave" => MountBindOptionsPropagationEnum::RSLAVE,
                        _ => MountBindOptionsPropagationEnum::RPRIVATE,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let devices = s
            .devices
            .iter()
            .map(|d| {
                let mut parts = d.splitn(3, ':');
                let host = parts.next().unwrap_or_default().to_string();
                let cont = parts
                    .next()
                    .map(str::to_string)
                    .unwrap_or_else(|| host.clone());
                let perms = parts.next().unwrap_or("rwm").to_string();
                DeviceMapping {
                    path_on_host: Some(host),
                    path_in_container: Some(cont),
                    cgroup_permissions: Some(perms),
                }
            })
            .collect::<Vec<_>>();
        let host_config = HostConfig {
            port_bindings: Some(port_bindings),
            mounts: Some(mounts),
            restart_policy: Some(RestartPolicy {
                name: Some(match s.restart.as_str() {
                    "no" => RestartPolicyNameEnum::NO,
                    "always" => RestartPolicyNameEnum::ALWAYS,
                    "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                    _ => RestartPolicyNameEnum::UNLESS_STOPPED,
                }),
                maximum_retry_count: None,
            }),
            cap_add: (!s.cap_add.is_empty()).then(|| s.cap_add.clone()),
            cap_drop: (!s.cap_drop.is_empty()).then(|| s.cap_drop.clone()),
            privileged: Some(s.privileged),
            devices: (!devices.is_empty()).then_some(devices),
            security_opt: (!s.security_opt.is_empty()).then(|| s.security_opt.clone()),
            readonly_rootfs: Some(s.read_only),
            tmpfs: (!s.tmpfs.is_empty()).then(|| s.tmpfs.clone().into_iter().collect()),
            pid_mode: s.pid.clone(),
            memory: s.memory,
            nano_cpus: s.nano_cpus,
            pids_limit: s.pids_limit,
            log_config: s.log_driver.as_ref().map(|l| HostConfigLogConfig {
                typ: Some(l.driver.clone()),
                config: Some(l.options.clone().into_iter().collect()),
            }),
            extra_hosts: (!s.extra_hosts.is_empty()).then(|| s.extra_hosts.clone()),
            network_mode: s.networks.first().map(|n| n.network.clone()),
            ..Default::default()
        };
        let networking_config = s.networks.first().map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.network.clone(),
                EndpointSettings {
                    aliases: Some(n.aliases.clone()),
                    ..Default::default()
                },
            )])),
        });
        let body = ContainerCreateBody {
            image: Some(s.image.clone()),
            cmd: s.cmd.clone(),
            entrypoint: s.entrypoint.clone(),
            working_dir: s.working_dir.clone(),
            env: Some(s.env.clone()),
            labels: Some(s.labels.clone().into_iter().collect()),
            exposed_ports: (!s.exposed_ports.is_empty()).then(|| s.exposed_ports.clone()),
            user: s.user.clone(),
            healthcheck: s
                .healthcheck
                .as_ref()
                .map(|h| bollard::models::HealthConfig {
                    test: Some(h.test.clone()),
                    interval: (h.interval_ns > 0).then_some(h.interval_ns),
                    timeout: (h.timeout_ns > 0).then_some(h.timeout_ns),
                    retries: (h.retries > 0).then_some(h.retries),
                    start_period: (h.start_period_ns > 0).then_some(h.start_period_ns),
                    start_interval: None,
                }),
            stop_signal: s.stop_signal.clone(),
            stop_timeout: s.stop_timeout,
            host_config: Some(host_config),
            networking_config,
            ..Default::default()
        };
        let opts = qp::CreateContainerOptionsBuilder::default()
            .name(&s.name)
            .build();
        let id = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(|e| match map_err(e) {
                DockerError::NotFound(m) => DockerError::Image {
                    image: s.image.clone(),
                    message: m,
                },
                other => other,
            })?
            .id;
        for n in s.networks.iter().skip(1) {
            let net = &n.network;
            let req = NetworkConnectRequest {
                container: id.clone(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(n.aliases.clone()),
                    ..Default::default()
                }),
            };
            if let Err(e) = self.docker.connect_network(net, req).await {
                // Leave nothing half-made: a container without its networks is removed.
                let _ = self.remove_container(&id).await;
                return Err(map_err(e));
            }
        }
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        match self
            .docker
            .start_container(id, None::<qp::StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            // 304: already running (a reload that fell back to a restart started it).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn stop_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let mut b = qp::StopContainerOptionsBuilder::default();
        if let Some(t) = timeout_secs {
            b = b.t(t as i32);
        }
        match self.docker.stop_container(id, Some(b.build())).await {
            Ok(()) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn restart_container(&self, id: &str, timeout_secs: Option<i64>) -> Result<()> {
        let mut b = qp::RestartContainerOptionsBuilder::default();
        if let Some(t) = timeout_secs {
            b = b.t(t as i32);
        }
        self.docker
            .restart_container(id, Some(b.build()))
            .await
            .map_err(map_err)
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let opts = qp::KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        self.docker
            .kill_container(id, Some(opts))
            .await
            .map_err(map_err)
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        // Never `v: true`: anonymous volumes are left alone like named ones.
        let opts = qp::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        self.docker
            .remove_container(id, Some(opts))
            .await
            .map_err(map_err)
    }

    async fn rename_container(&self, id: &str, new_name: &str) -> Result<()> {
        let opts = qp::RenameContainerOptionsBuilder::default()
            .name(new_name)
            .build();
        self.docker
            .rename_container(id, opts)
            .await
            .map_err(map_err)
    }

    async fn disconnect_network(&self, network: &str, id: &str) -> Result<()> {
        let req = bollard::models::NetworkDisconnectRequest {
            container: id.to_string(),
            force: Some(true),
        };
        self.docker
            .disconnect_network(network, req)
            .await
            .map_err(map_err)
    }

    async fn inspect_state(&self, id: &str) -> Result<ContainerState> {
        use bollard::models::{ContainerStateStatusEnum as S, HealthStatusEnum as H};
        let r = self
            .docker
            .inspect_container(id, None::<qp::InspectContainerOptions>)
            .await
            .map_err(map_err)?;
        let st = r.state.unwrap_or_default();
        let state = match st.status {
            Some(S::RUNNING) => RunState::Running,
            Some(S::PAUSED) => RunState::Paused,
            Some(S::RESTARTING) => RunState::Restarting,
            Some(S::REMOVING) => RunState::Removing,
            Some(S::EXITED) | Some(S::STOPPING) => RunState::Exited,
            Some(S::DEAD) => RunState::Dead,
            _ => RunState::Created,
        };
        let health = st.health.and_then(|h| h.status).and_then(|s| match s {
            H::STARTING => Some(Health::Starting),
            H::HEALTHY => Some(Health::Healthy),
            H::UNHEALTHY => Some(Health::Unhealthy),
            _ => None,
        });
        Ok(ContainerState {
            state,
            exit_code: st.exit_code.unwrap_or(0),
            health,
            restart_count: r.restart_count.unwrap_or(0),
            error: st.error.filter(|e| !e.is_empty()),
        })
    }

    async fn exec(&self, id: &str, cmd: &[String]) -> Result<(i64, String)> {
        use bollard::exec::{StartExecOptions, StartExecResults};
        let created = self
            .docker
            .create_exec(
                id,
                bollard::models::ExecConfig {
                    cmd: Some(cmd.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(map_err)?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(map_err)?;
        let mut out = String::new();
        if let StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                out.push_str(&String::from_utf8_lossy(
                    &chunk.map_err(map_err)?.into_bytes(),
                ));
            }
        }
        let code = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(map_err)?
            .exit_code
            .unwrap_or(-1);
        Ok((code, out))
    }

    async fn container_logs(&self, id: &str, tail: usize) -> Result<String> {
        let opts = qp::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail.to_string())
            .build();
        let chunks: Vec<bollard::container::LogOutput> = self
            .docker
            .logs(id, Some(opts))
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut out = String::new();
        for c in chunks {
            out.push_str(&String::from_utf8_lossy(&c.into_bytes()));
        }
        Ok(out)
    }

    async fn containers_using_volume(&self, volume: &str) -> Result<Vec<ContainerInfo>> {
        let mut filters = HashMap::new();
        filters.insert("volume".to_string(), vec![volume.to_string()]);
        self.list(filters).await
    }

    async fn pause_container(&self, id: &str) -> Result<()> {
        self.docker.pause_container(id).await.map_err(map_err)
    }

    async fn unpause_container(&self, id: &str) -> Result<()> {
        self.docker.unpause_container(id).await.map_err(map_err)
    }

    fn download_archive(
        &self,
        id: &str,
        path: &str,
    ) -> impl Stream<Item = Result<bytes::Bytes>> + Send + 'static {
        let opts = qp::DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        // Edition 2021: bollard's stream does not borrow the client.
        self.docker
            .download_from_container(id, Some(opts))
            .map_err(map_err)
    }

    async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        tar: impl Stream<Item = bytes::Bytes> + Send + 'static,
    ) -> Result<()> {
        let opts = qp::UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_stream(tar))
            .await
            .map_err(map_err)
    }

    fn events(&self) -> impl Stream<Item = Result<EngineEvent>> + Send + 'static {
        let docker = self.docker.clone();
        let mut filters = HashMap::new();
        filters.insert(
            "type".to_string(),
            vec![
                "container".to_string(),
                "network".to_string(),
                "volume".to_string(),
            ],
        );
        let opts = qp::EventsOptionsBuilder::default()
            .filters(&filters)
            .build();
        docker.events(Some(opts)).map_err(map_err).map_ok(|e| {
            let actor = e.actor.unwrap_or_default();
            EngineEvent {
                kind: e
                    .typ
                    .map(|t| format!("{t:?}").to_ascii_lowercase())
                    .unwrap_or_default(),
                action: e.action.unwrap_or_default(),
                id: actor.id.unwrap_or_default(),
                labels: to_btree(actor.attributes),
            }
        })
    }
}
