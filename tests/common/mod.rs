//! Shared fixtures for the tests that run against the real Docker engine.
//!
//! - [`ensure_image`] builds `obsd-test/busybox:1` (`FROM scratch` + Debian's static
//!   busybox) once per test binary, and sweeps leftovers of earlier test runs whose
//!   process is gone.
//! - [`Stack`] writes a desired-state directory with a project name unique to the test
//!   (`obsdt-<pid>-<tag>`) and its own state directory, runs `obsctl`, spawns `obsd`, and
//!   on drop removes every container, volume and network of the project — also when
//!   the test panicked.
//! - [`poll`] waits for a condition with a deadline instead of sleeping.
//! - [`recording::Recording`] wraps the real engine, records calls, and can cut a pass
//!   at a chosen write (a kill -9 between two API calls).
//!
//! Desired-state documents are kept as JSON values and written as JSON, which is YAML:
//! tests edit them structurally (`stack.svc("web")["env"]["A"] = json!("2")`).

#![allow(dead_code)]

pub mod recording;
pub mod registry;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "obsd-test/busybox:1";
/// A long-running command that exits at once on SIGTERM (so stops take no grace period).
pub const LOOP: &str = "trap 'exit 0' TERM; while true; do sleep 1; done";
pub const STACK_LABEL: &str = "obs.tlsstress.art/stack";
pub const API: &str = "obs.tlsstress.art/v1alpha1";
/// Prefix of every test project: `obsdt-<pid>-<tag>`.
const PREFIX: &str = "obsdt-";

pub const OBSCTL: &str = env!("CARGO_BIN_EXE_obsctl");
pub const OBSD: &str = env!("CARGO_BIN_EXE_obsd");

// ------------------------------------------------------------------------------ docker

/// Runs the `docker` CLI; panics only when it cannot be started at all.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `docker {}`: {e}", args.join(" ")))
}

/// Runs the `docker` CLI, asserts success, returns trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "`docker {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `docker inspect` of one container (by name or ID), `None` when it does not exist.
pub fn inspect(name_or_id: &str) -> Option<Value> {
    let out = docker(&["container", "inspect", name_or_id]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("docker inspect prints JSON");
    v.as_array().and_then(|a| a.first().cloned())
}

/// Short facts about a container, from `docker inspect`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ctr {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    pub running: bool,
    pub started_at: String,
    pub restart_count: i64,
    pub health: Option<String>,
    pub labels: serde_json::Map<String, Value>,
    pub env: Vec<String>,
}

impl Ctr {
    fn from_inspect(v: &Value) -> Ctr {
        Ctr {
            id: v["Id"].as_str().unwrap_or_default().to_string(),
            name: v["Name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            running: v["State"]["Running"].as_bool().unwrap_or(false),
            started_at: v["State"]["StartedAt"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            restart_count: v["RestartCount"].as_i64().unwrap_or(0),
            health: v["State"]["Health"]["Status"].as_str().map(str::to_string),
            labels: v["Config"]["Labels"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            env: v["Config"]["Env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels.get(k).and_then(Value::as_str)
    }
}

/// One container by name or ID.
pub fn ctr(name_or_id: &str) -> Option<Ctr> {
    inspect(name_or_id).map(|v| Ctr::from_inspect(&v))
}

/// Every container carrying `obs.tlsstress.art/stack=<project>`, sorted by name.
pub fn owned_containers(project: &str) -> Vec<Ctr> {
    let ids = lines(&docker_ok(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label={STACK_LABEL}={project}"),
    ]));
    let mut v: Vec<Ctr> = ids.iter().filter_map(|id| ctr(id)).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// Names of every container (owned or not) whose name starts with `prefix`.
pub fn container_names_with_prefix(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = lines(&docker_ok(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name=^/{prefix}"),
    ]))
    .into_iter()
    .filter(|n| n.starts_with(prefix))
    .collect();
    v.sort();
    v
}

/// `docker volume inspect` → labels, `None` when the volume does not exist.
pub fn volume_labels(name: &str) -> Option<serde_json::Map<String, Value>> {
    let out = docker(&["volume", "inspect", name]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v[0]["Labels"].as_object().cloned().unwrap_or_default())
}

/// `docker network inspect` → labels, `None` when the network does not exist.
pub fn network_labels(name: &str) -> Option<serde_json::Map<String, Value>> {
    let out = docker(&["network", "inspect", name]);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v[0]["Labels"].as_object().cloned().unwrap_or_default())
}

/// Removes every container, volume and network of `project` (owned by label, or named
/// after it, like a hand-made name-conflict container). Best effort, never panics.
pub fn remove_project(project: &str) {
    let q = |args: &[&str]| -> Vec<String> {
        match Command::new("docker").args(args).output() {
            Ok(o) if o.status.success() => lines(&String::from_utf8_lossy(&o.stdout)),
            _ => Vec::new(),
        }
    };
    let label = format!("label={STACK_LABEL}={project}");
    let mut ctrs = q(&["ps", "-aq", "--no-trunc", "--filter", &label]);
    ctrs.extend(q(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("name=^/{project}-"),
    ]));
    ctrs.sort();
    ctrs.dedup();
    if !ctrs.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(ctrs.iter().map(String::as_str));
        let _ = Command::new("docker").args(&args).output();
    }
    let mut vols = q(&["volume", "ls", "-q", "--filter", &label]);
    vols.extend(
        q(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={project}_"),
        ])
        .into_iter()
        .filter(|v| v.starts_with(&format!("{project}_"))),
    );
    vols.sort();
    vols.dedup();
    for v in vols {
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &v])
            .output();
    }
    let mut nets = q(&["network", "ls", "-q", "--filter", &label]);
    nets.extend(q(&[
        "network",
        "ls",
        "-q",
        "--filter",
        &format!("name={project}_"),
    ]));
    nets.sort();
    nets.dedup();
    for n in nets {
        let _ = Command::new("docker").args(["network", "rm", &n]).output();
    }
}

/// The pid in `obsdt-<pid>-…`, when the name is one of ours.
fn pid_of(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Projects of earlier test processes that are gone (killed before their guards ran).
fn sweep_stale() {
    let q = |args: &[&str]| -> Vec<String> {
        match Command::new("docker").args(args).output() {
            Ok(o) if o.status.success() => lines(&String::from_utf8_lossy(&o.stdout)),
            _ => Vec::new(),
        }
    };
    let mut names = q(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name=^/{PREFIX}"),
    ]);
    names.extend(q(&[
        "volume",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("name={PREFIX}"),
    ]));
    names.extend(q(&[
        "network",
        "ls",
        "--format",
        "{{.Name}}",
        "--filter",
        &format!("name={PREFIX}"),
    ]));
    let mut dead: Vec<u32> = names
        .iter()
        .filter_map(|n| pid_of(n))
        .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    dead.sort();
    dead.dedup();
    for pid in dead {
        // Projects are `obsdt-<pid>-<tag>`; containers `<project>-<svc>`, volumes and
        // networks `<project>_<name>`. Removing by the `obsdt-<pid>-` prefix covers all.
        let p = format!("{PREFIX}{pid}-");
        for c in q(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("name=^/{p}"),
        ]) {
            let _ = Command::new("docker").args(["rm", "-f", "-v", &c]).output();
        }
        for v in q(&[
            "volume",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("name={p}"),
        ]) {
            if v.starts_with(&p) {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f", &v])
                    .output();
            }
        }
        for n in q(&[
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &format!("name={p}"),
        ]) {
            if n.starts_with(&p) {
                let _ = Command::new("docker").args(["network", "rm", &n]).output();
            }
        }
    }
}

/// Builds the test image once per test binary (idempotent: the build cache makes a
/// rebuild a no-op with the same image ID) and sweeps leftovers of dead test runs.
pub fn ensure_image() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: the real-engine tests build their image from Debian's \
             static busybox — run `apt-get install busybox-static`"
        );
        let ctx = tempfile::tempdir().expect("tempdir");
        std::fs::copy(busybox, ctx.path().join("busybox")).expect("copy /bin/busybox");
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\n\
             RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCMD [\"/bin/sh\"]\n",
        )
        .expect("write Dockerfile");
        let out = Command::new("docker")
            .args(["build", "-q", "-t", IMAGE])
            .arg(ctx.path())
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("cannot run `docker build` (is the docker CLI installed?)");
        assert!(
            out.status.success(),
            "building {IMAGE} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        sweep_stale();
    });
}

/// GET with curl (2 s timeout); the body on a 2xx answer.
pub fn http_get(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-sf", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

// ------------------------------------------------------------------------------ polling

/// Polls `f` every 50 ms until it returns `Some`, or panics after `deadline` with `what`.
pub fn poll<T>(deadline: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A volume read through a throwaway container: every entry's name, mode, owner, size,
/// type and link target, and every file's SHA-256, sorted: two volumes with the same
/// listing hold the same bytes.
pub fn volume_listing(volume: &str) -> String {
    docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{volume}:/d:ro"),
        IMAGE,
        "sh",
        "-c",
        "cd /d && find . -exec stat -c '%n %a %u %g %s %F %N' {} \\; | sort && find . -type f -exec sha256sum {} \\; | sort",
    ])
}

// ------------------------------------------------------------------- status JSON reading

/// The row of `kind`/`name` in `obsctl status -o json`.
pub fn status_row<'a>(status: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    status["resources"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == kind && r["name"] == name)
}

/// The drift reasons of `kind`/`name` in `obsctl status -o json` (empty when absent).
pub fn status_drift(status: &Value, kind: &str, name: &str) -> Vec<String> {
    status_row(status, kind, name)
        .and_then(|r| r["drift"].as_array())
        .map(|d| {
            d.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

// ------------------------------------------------------------------------------ commands

/// Result of running `obsctl`.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing both streams when it differs.
    pub fn expect(self, code: i32, what: &str) -> Run {
        assert_eq!(
            self.code, code,
            "{what}: exit code {} (want {code})\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

// ------------------------------------------------------------------------------ stack

/// A desired-state directory for one test, and the guard that cleans up after it.
pub struct Stack {
    pub project: String,
    root: tempfile::TempDir,
    /// Desired-state directory.
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    /// Documents in file order: the Stack first.
    docs: Vec<Value>,
    daemons: std::cell::Cell<u32>,
}

/// A long-running service spec on the test image; `extra` is merged over it.
pub fn service(extra: Value) -> Value {
    let mut s = json!({
        "image": IMAGE,
        "command": ["sh", "-c", LOOP],
        "stopGracePeriod": "1s",
    });
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    s
}

fn doc(kind: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})
}

impl Stack {
    /// A stack with project `obsdt-<pid>-<tag>`, a `default` network that is the
    /// default of every service, and nothing else yet.
    pub fn new(tag: &str) -> Stack {
        ensure_image();
        let project = format!("{PREFIX}{}-{tag}", std::process::id());
        // Nothing of an earlier run of this very test (same pid is unlikely, but cheap).
        remove_project(&project);
        let root = tempfile::Builder::new()
            .prefix(&format!("{project}."))
            .tempdir()
            .expect("tempdir");
        let dir = root.path().join("ds");
        let state_dir = root.path().join("state");
        std::fs::create_dir_all(dir.join("config")).expect("mkdir");
        std::fs::create_dir_all(&state_dir).expect("mkdir");
        let stack = doc(
            "Stack",
            "test",
            json!({
                "project": project,
                "defaultNetwork": "default",
                "stateDir": state_dir.to_string_lossy(),
            }),
        );
        Stack {
            project,
            root,
            dir,
            state_dir,
            docs: vec![stack, doc("Network", "default", json!({}))],
            daemons: std::cell::Cell::new(0),
        }
    }

    /// The Stack document's spec.
    pub fn stack_spec(&mut self) -> &mut Value {
        &mut self.docs[0]["spec"]
    }

    pub fn volume(&mut self, name: &str) -> &mut Self {
        self.docs.push(doc("Volume", name, json!({})));
        self
    }

    pub fn network(&mut self, name: &str) -> &mut Self {
        self.docs.push(doc("Network", name, json!({})));
        self
    }

    /// Adds a Service with this spec (see [`service`] for a long-running one).
    pub fn service(&mut self, name: &str, spec: Value) -> &mut Self {
        self.docs.push(doc("Service", name, spec));
        self
    }

    /// The spec of a document, to edit it.
    pub fn spec(&mut self, kind: &str, name: &str) -> &mut Value {
        let d = self
            .docs
            .iter_mut()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in the test stack"));
        &mut d["spec"]
    }

    /// Writes `.env` beside the documents as a user keeps it (mode 0600) and names it
    /// in the Stack (`envFile: .env`).
    pub fn env_file(&mut self, content: impl AsRef<str>) {
        let path = self.dir.join(".env");
        std::fs::write(&path, content.as_ref()).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        self.stack_spec()["envFile"] = json!(".env");
    }

    /// The spec of a Service, to edit it.
    pub fn svc(&mut self, name: &str) -> &mut Value {
        self.spec("Service", name)
    }

    /// Removes a document.
    pub fn remove(&mut self, kind: &str, name: &str) -> &mut Self {
        let before = self.docs.len();
        self.docs
            .retain(|d| !(d["kind"] == kind && d["metadata"]["name"] == name));
        assert!(self.docs.len() < before, "no {kind} {name} to remove");
        self
    }

    /// The documents as they would be written (for hand-made variants).
    pub fn render(&self) -> String {
        self.docs
            .iter()
            .map(|d| serde_json::to_string_pretty(d).expect("json"))
            .collect::<Vec<_>>()
            .join("\n---\n")
            + "\n"
    }

    /// Writes `stack.yaml` the way editors save: a temp file renamed over the old one.
    pub fn write(&self) {
        self.write_raw(&self.render());
    }

    /// Writes `stack.yaml` with exactly this content (renamed into place).
    pub fn write_raw(&self, content: &str) {
        let tmp = self.dir.join(".stack.yaml.tmp");
        std::fs::write(&tmp, content).expect("write stack");
        std::fs::rename(&tmp, self.dir.join("stack.yaml")).expect("rename stack");
    }

    /// Writes a file under the desired-state directory *in place* (same inode), as a
    /// config file bind-mounted into a running container must be changed.
    pub fn file(&self, rel: &str, content: &str) {
        let p = self.dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .expect("open config file");
        f.write_all(content.as_bytes()).expect("write config file");
    }

    /// Container name of a service.
    pub fn cname(&self, svc: &str) -> String {
        format!("{}-{svc}", self.project)
    }

    /// Docker name of a volume or network resource.
    pub fn dname(&self, name: &str) -> String {
        format!("{}_{name}", self.project)
    }

    pub fn ctr(&self, svc: &str) -> Option<Ctr> {
        ctr(&self.cname(svc))
    }

    /// The container of `svc`, asserting it exists.
    pub fn must(&self, svc: &str) -> Ctr {
        self.ctr(svc)
            .unwrap_or_else(|| panic!("container {} does not exist", self.cname(svc)))
    }

    pub fn owned(&self) -> Vec<Ctr> {
        owned_containers(&self.project)
    }

    /// `obsctl ARGS` against this stack's state directory and daemon socket.
    pub fn obsctl(&self, args: &[&str]) -> Run {
        self.obsctl_env(args, &[])
    }

    pub fn obsctl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(OBSCTL);
        cmd.args(args)
            .env("OBSD_STATE_DIR", &self.state_dir)
            .env("OBSD_SOCKET", self.socket())
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Run::from(cmd.output().expect("run obsctl"))
    }

    fn dir_str(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    pub fn apply(&self) -> Run {
        self.obsctl(&["apply", "--desired-state", &self.dir_str()])
    }

    pub fn diff(&self) -> Run {
        self.obsctl(&["diff", "--desired-state", &self.dir_str()])
    }

    /// `obsctl status -o json` (the daemon must run), parsed.
    pub fn status_json(&self) -> (i32, Value) {
        let r = self.obsctl(&["status", "-o", "json"]);
        let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
            panic!(
                "obsctl status -o json: {e}\n--- stdout\n{}--- stderr\n{}",
                r.stdout, r.stderr
            )
        });
        (r.code, v)
    }

    pub fn socket(&self) -> PathBuf {
        self.state_dir.join("obsd.sock")
    }

    /// Starts `obsd` on this stack and waits until it serves `/healthz` and its socket.
    pub fn spawn_daemon(&self) -> Daemon {
        self.spawn_daemon_env(&[])
    }

    /// [`Stack::spawn_daemon`] with extra environment variables (e.g. `DOCKER_HOST`).
    pub fn spawn_daemon_env(&self, env: &[(&str, &str)]) -> Daemon {
        self.spawn_daemon_with(env, &[])
    }

    /// [`Stack::spawn_daemon`] with extra environment variables and arguments.
    pub fn spawn_daemon_with(&self, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let n = self.daemons.get() + 1;
        self.daemons.set(n);
        let log = self.root.path().join(format!("obsd-{n}.log"));
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let _ = std::fs::remove_file(self.socket());
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(OBSD)
            .arg("--desired-state")
            .arg(&self.dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .env("OBSD_LOG", "info,obsd=debug")
            .env_remove("OBSD_STATE_DIR")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup"))
            .stderr(logf)
            .spawn()
            .expect("spawn obsd");
        let mut d = Daemon {
            child: Some(child),
            addr,
            log,
        };
        let socket = self.socket();
        poll(Duration::from_secs(20), "obsd to serve /healthz", || {
            if let Some(st) = d.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("obsd exited early ({st}):\n{}", d.log());
            }
            (d.get("/healthz").is_some_and(|b| b.contains("ok")) && socket.exists()).then_some(())
        });
        d
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        remove_project(&self.project);
    }
}

// ------------------------------------------------------------------------------ daemon

/// A running `obsd`; killed (SIGKILL) on drop if still running. Its log is printed when
/// the test panics.
pub struct Daemon {
    child: Option<Child>,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// GET over plain HTTP/1.0; the body, or `None` when nothing answers.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: obsd\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.")
            .then(|| head.contains(" 200 "))
            .filter(|ok| *ok)
            .map(|_| body.to_string())
    }

    pub fn metrics(&self) -> String {
        self.get("/metrics").expect("GET /metrics")
    }

    /// The value of an unlabelled sample (or the first sample whose name+labels equal
    /// `series`), e.g. `obsd_desired_state_valid`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        self.get("/metrics")?.lines().find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == series).then(|| v.parse().ok()).flatten()
        })
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait (at most `timeout`) for a graceful exit.
    pub fn term(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        // SAFETY: signalling a child process we spawned and have not reaped.
        unsafe {
            libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
        }
        let start = Instant::now();
        loop {
            if let Some(st) = c.try_wait().expect("wait") {
                return st;
            }
            if start.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                panic!("obsd did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- obsd log (last {} lines) ---\n{}",
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}
