//! Fixtures of the reliability suite (`tests/reliability.rs`): the hostile-edit table,
//! unowned bystander containers, and small measurements.

use crate::common::*;
use serde_json::{json, Value};
use std::path::Path;

/// Part of every env-file value the hostile edits write: it must never be printed.
pub const SECRET_CANARY: &str = "s3cr3t-canary";

/// `OBSD_RELIABILITY_LONG=1` selects the long versions of the scenarios.
pub fn long() -> bool {
    std::env::var("OBSD_RELIABILITY_LONG").is_ok_and(|v| v == "1")
}

// ------------------------------------------------------------------------------ bystanders

/// Containers this suite starts next to a stack and obsd must never touch: one named
/// with the project's prefix but without any label, one labelled as another project's.
pub struct Bystanders {
    pub ctrs: Vec<Ctr>,
}

impl Bystanders {
    pub fn start(project: &str) -> Bystanders {
        let specs = [
            (format!("{project}-bystander"), None),
            (
                format!("{project}-foreign"),
                Some(format!("{STACK_LABEL}={project}-other")),
            ),
        ];
        let mut ctrs = Vec::new();
        for (name, label) in specs {
            let mut args = vec!["run", "-d", "--name", &name];
            if let Some(l) = &label {
                args.extend(["--label", l]);
            }
            args.extend([IMAGE, "sh", "-c", LOOP]);
            docker_ok(&args);
            ctrs.push(ctr(&name).expect("bystander started"));
        }
        Bystanders { ctrs }
    }

    /// Each bystander still exists with the same ID and start time, running.
    pub fn check(&self, when: &str) {
        for b in &self.ctrs {
            let now = ctr(&b.id).unwrap_or_else(|| panic!("{when}: bystander {} is gone", b.name));
            assert!(
                now.running && now.started_at == b.started_at && now.name == b.name,
                "{when}: bystander {} was touched: {now:?}",
                b.name
            );
        }
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        for b in &self.ctrs {
            let _ = docker(&["rm", "-f", &b.id]);
        }
    }
}

// ------------------------------------------------------------------------------ snapshots

/// (name, id, StartedAt, running) of every owned container.
pub type Snapshot = Vec<(String, String, String, bool)>;

pub fn snapshot(s: &Stack) -> Snapshot {
    s.owned()
        .into_iter()
        .map(|c| (c.name, c.id, c.started_at, c.running))
        .collect()
}

/// Peak resident set of a process (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = st
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Sum of every sample of a metric family (`obsd_reconcile_total`, all labels).
pub fn metric_sum(metrics: &str, family: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

// ------------------------------------------------------------------------------ documents

/// The documents of `stack.yaml` (as `Stack::render` writes them: pretty JSON joined by
/// `---`).
pub fn parse_docs(rendered: &str) -> Vec<Value> {
    rendered
        .split("\n---\n")
        .map(|d| serde_json::from_str(d).expect("rendered document"))
        .collect()
}

pub fn render_docs(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_json::to_string_pretty(d).expect("json"))
        .collect::<Vec<_>>()
        .join("\n---\n")
        + "\n"
}

/// 1-based line and column (in characters) of the first `needle` in `text`.
pub fn locate(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("needle {needle:?} not in:\n{text}"));
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    (line, col)
}

// ------------------------------------------------------------------------------ hostile edits

/// Where the error of a hostile edit must be reported.
#[derive(Debug, Clone)]
pub struct Expect {
    /// File name, relative to the desired-state directory.
    pub file: String,
    pub line: usize,
    pub col: usize,
    /// A fragment of `path: message`.
    pub msg: String,
}

/// One hostile edit: the files to write (relative path → bytes; `stack.yaml` is always
/// written, by rename), special files to make, and where the error must be reported.
pub struct Hostile {
    pub name: String,
    pub files: Vec<(String, Vec<u8>)>,
    pub special: Option<Special>,
    /// Modes to set after writing (env files must be 0600).
    pub modes: Vec<(String, u32)>,
    pub expect: Expect,
}

/// Files that are not plain bytes.
#[derive(Debug, Clone)]
pub enum Special {
    /// `name` → a symlink to `target`.
    Symlink { name: String, target: String },
    /// `name` is a FIFO.
    Fifo { name: String },
}

impl Hostile {
    /// Writes the edit into `dir` (stack.yaml by rename, as editors save).
    pub fn apply(&self, dir: &Path) {
        for (rel, bytes) in &self.files {
            let p = dir.join(rel);
            if rel == "stack.yaml" {
                let tmp = dir.join(".stack.yaml.tmp");
                std::fs::write(&tmp, bytes).expect("write");
                std::fs::rename(&tmp, &p).expect("rename");
            } else {
                if let Some(parent) = p.parent() {
                    std::fs::create_dir_all(parent).expect("mkdir");
                }
                std::fs::write(&p, bytes).expect("write");
            }
        }
        for (rel, mode) in &self.modes {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join(rel), std::fs::Permissions::from_mode(*mode))
                .expect("chmod");
        }
        match &self.special {
            Some(Special::Symlink { name, target }) => {
                std::os::unix::fs::symlink(target, dir.join(name)).expect("symlink")
            }
            Some(Special::Fifo { name }) => {
                let c = std::ffi::CString::new(dir.join(name).to_string_lossy().as_bytes())
                    .expect("path");
                // SAFETY: a NUL-terminated path; mkfifo has no other preconditions.
                let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
                assert_eq!(rc, 0, "mkfifo");
            }
            None => {}
        }
    }

    /// Removes the files this edit added besides `stack.yaml`.
    pub fn undo_extra(&self, dir: &Path) {
        for (rel, _) in &self.files {
            if rel != "stack.yaml" {
                let _ = std::fs::remove_file(dir.join(rel));
            }
        }
        if let Some(Special::Symlink { name, .. } | Special::Fifo { name }) = &self.special {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }

    /// `file:line:col`, as the daemon's status and `obsctl validate` print it
    /// (`file:` alone when the place in the file is not pinned: line 0).
    pub fn location(&self) -> String {
        if self.expect.line == 0 {
            format!("{}:", self.expect.file)
        } else {
            format!(
                "{}:{}:{}",
                self.expect.file, self.expect.line, self.expect.col
            )
        }
    }
}

/// The baseline every hostile edit starts from: Stack, Network `default`, Services
/// `web` (env V=1), `api` and `canary` (env GEN=0, the one the good edits change).
pub fn baseline(s: &mut Stack) {
    s.service("web", service(json!({"env": {"V": "1"}})))
        .service("api", service(json!({})))
        .service("canary", service(json!({"env": {"GEN": "0"}})));
}

struct Builder {
    base: Vec<Value>,
    out: Vec<Hostile>,
}

fn find<'a>(docs: &'a mut [Value], kind: &str, name: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

impl Builder {
    /// A structural edit of the documents; the error is expected at `needle` (its first
    /// occurrence in the rendered file).
    fn edit(&mut self, name: &str, needle: &str, msg: &str, f: impl FnOnce(&mut Vec<Value>)) {
        let mut docs = self.base.clone();
        f(&mut docs);
        let text = render_docs(&docs);
        self.raw(name, text, needle, msg);
    }

    /// Sets `spec.<key>` of Service `web`; the error at `"key"`.
    fn web(&mut self, key: &str, value: Value, msg: &str) {
        self.web_at(key, value, &format!("\"{key}\""), msg)
    }

    /// Sets `spec.<key>` of Service `web`; the error at `needle`.
    fn web_at(&mut self, key: &str, value: Value, needle: &str, msg: &str) {
        self.edit(&format!("web.{key}={value}"), needle, msg, |d| {
            find(d, "Service", "web")["spec"][key] = value;
        });
    }

    /// A structural edit; the error at the *last* occurrence of `needle`.
    fn edit_last(&mut self, name: &str, needle: &str, msg: &str, f: impl FnOnce(&mut Vec<Value>)) {
        let mut docs = self.base.clone();
        f(&mut docs);
        let text = render_docs(&docs);
        let at = text.rfind(needle).expect("needle");
        let line = text[..at].matches('\n').count() + 1;
        let col = text[text[..at].rfind('\n').map_or(0, |i| i + 1)..at]
            .chars()
            .count()
            + 1;
        self.bytes(name, text.into_bytes(), (line, col), msg);
    }

    /// `stack.yaml` with this text; the error at `needle`.
    fn raw(&mut self, name: &str, text: String, needle: &str, msg: &str) {
        let (line, col) = locate(&text, needle);
        self.out.push(Hostile {
            name: name.to_string(),
            files: vec![("stack.yaml".into(), text.into_bytes())],
            special: None,
            modes: Vec::new(),
            expect: Expect {
                file: "stack.yaml".into(),
                line,
                col,
                msg: msg.into(),
            },
        });
    }

    /// `stack.yaml` with these bytes; the error at a given place.
    fn bytes(&mut self, name: &str, bytes: Vec<u8>, at: (usize, usize), msg: &str) {
        self.out.push(Hostile {
            name: name.to_string(),
            files: vec![("stack.yaml".into(), bytes)],
            special: None,
            modes: Vec::new(),
            expect: Expect {
                file: "stack.yaml".into(),
                line: at.0,
                col: at.1,
                msg: msg.into(),
            },
        });
    }

    /// The baseline plus another file `rel` with `text`; the error at `needle` in it.
    fn extra(&mut self, name: &str, rel: &str, text: &str, needle: &str, msg: &str) {
        let (line, col) = locate(text, needle);
        self.out.push(Hostile {
            name: name.to_string(),
            files: vec![
                ("stack.yaml".into(), render_docs(&self.base).into_bytes()),
                (rel.into(), text.as_bytes().to_vec()),
            ],
            special: None,
            modes: Vec::new(),
            expect: Expect {
                file: rel.into(),
                line,
                col,
                msg: msg.into(),
            },
        });
    }

    fn special(&mut self, name: &str, sp: Special, file: &str, msg: &str) {
        self.out.push(Hostile {
            name: name.to_string(),
            files: vec![("stack.yaml".into(), render_docs(&self.base).into_bytes())],
            special: Some(sp),
            modes: Vec::new(),
            expect: Expect {
                file: file.into(),
                line: 0,
                col: 0,
                msg: msg.into(),
            },
        });
    }
}

fn svc_doc(name: &str, spec: Value) -> Value {
    json!({"apiVersion": API, "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

/// The hostile edits that today's loader must reject, located. `base` is the rendered
/// baseline `stack.yaml`.
pub fn hostile_edits(base: &str) -> Vec<Hostile> {
    let mut b = Builder {
        base: parse_docs(base),
        out: Vec::new(),
    };
    // --- unknown fields and wrong types on a Service
    b.web("imagePolicy", json!("x"), "unknown field `imagePolicy`");
    b.web("image", json!(5), "image");
    b.web("image", json!(""), "image");
    b.web("image", json!("Not A/Valid Image:tag"), "image");
    b.web("image", json!("busybox:bad tag"), "image");
    b.web("restart", json!("sometimes"), "restart");
    b.web("restart", json!(1), "restart");
    b.web("command", json!("sh -c 'echo hi'"), "command");
    b.web("env", json!(["A=1"]), "env");
    b.web_at("env", json!({"A": {"nested": 1}}), "\"A\"", "env.A");
    b.web("expose", json!("yes"), "expose");
    b.web("privileged", json!("yes"), "privileged");
    b.web("readOnly", json!("true"), "readOnly");
    b.web("stopGracePeriod", json!("forever"), "stopGracePeriod");
    b.web("tmpfs", json!("/run"), "tmpfs");
    b.web("networks", json!("default"), "networks");
    b.web("labels", json!(["a=b"]), "labels");
    b.web("user", json!(["root"]), "user");
    b.web("dependsOn", json!("api"), "dependsOn");
    b.web("healthcheck", json!("true"), "healthcheck");
    b.web_at(
        "resources",
        json!({"memory": "lots"}),
        "\"memory\"",
        "memory",
    );
    b.web_at("resources", json!({"cpus": "two"}), "\"cpus\"", "cpus");
    b.web_at(
        "resources",
        json!({"pidsLimit": "many"}),
        "\"pidsLimit\"",
        "pidsLimit",
    );
    b.web_at(
        "ports",
        json!([{"host": "eighty", "container": 80}]),
        "\"host\"",
        "host",
    );
    b.web_at(
        "ports",
        json!([{"host": 70000, "container": 80}]),
        "\"host\"",
        "u16",
    );
    b.web_at(
        "ports",
        json!([{"host": 18080}]),
        "{\n        \"host\": 18080",
        "missing field `container`",
    );
    b.web_at(
        "ports",
        json!([{"host": 18080, "container": 80, "protocol": "sctp"}]),
        "\"protocol\"",
        "sctp",
    );
    b.web_at(
        "healthcheck",
        json!({"test": ["CMD", "true"], "interval": "5 parsecs"}),
        "\"interval\"",
        "parsecs",
    );
    b.web_at(
        "healthcheck",
        json!({"test": ["CMD", "true"], "retries": -1}),
        "\"retries\"",
        "retries",
    );
    b.web_at(
        "configFiles",
        json!([{"source": "config/missing.conf", "target": "/etc/x.conf"}]),
        "\"source\"",
        "does not exist",
    );
    b.web_at(
        "configFiles",
        json!([{"source": "../../../etc/passwd", "target": "/etc/x.conf"}]),
        "\"source\"",
        "inside the desired-state directory",
    );
    b.web_at(
        "volumes",
        json!([{"volume": "nope", "target": "/d"}]),
        "\"volume\"",
        "not declared",
    );
    b.web_at("networks", json!(["nope"]), "\"nope\"", "not declared");
    b.web_at(
        "dependsOn",
        json!([{"service": "ghost"}]),
        "\"service\"",
        "ghost",
    );
    b.web_at(
        "dependsOn",
        json!([{"service": "web"}]),
        "\"service\"",
        "itself",
    );
    b.web_at(
        "dependsOn",
        json!([{"service": "api", "condition": "healthy"}]),
        "\"condition\"",
        "no healthcheck",
    );
    b.web_at(
        "dependsOn",
        json!([{"service": "api", "condition": "sometime"}]),
        "\"condition\"",
        "sometime",
    );
    b.web_at(
        "env",
        json!({"V": "${UNDEFINED_IN_THIS_TEST}"}),
        "\"${UNDEFINED",
        "UNDEFINED_IN_THIS_TEST",
    );
    // --- documents and envelopes
    b.edit("cycle", "\"service\"", "cycle", |d| {
        find(d, "Service", "web")["spec"]["dependsOn"] = json!([{"service": "api"}]);
        find(d, "Service", "api")["spec"]["dependsOn"] = json!([{"service": "web"}]);
    });
    b.edit(
        "invalid-name",
        "\"name\": \"Web_Bad!\"",
        "invalid name",
        |d| {
            find(d, "Service", "web")["metadata"]["name"] = json!("Web_Bad!");
        },
    );
    b.edit_last(
        "duplicate-name",
        "\"name\": \"canary\"",
        "duplicate Service",
        |d| {
            d.push(svc_doc("canary", service(json!({}))));
        },
    );
    b.edit("unknown-kind", "\"kind\": \"Servise\"", "Servise", |d| {
        find(d, "Service", "api")["kind"] = json!("Servise");
    });
    b.edit(
        "wrong-api-version",
        "\"apiVersion\": \"obs.tlsstress.art/v2\"",
        "apiVersion",
        |d| {
            find(d, "Service", "api")["apiVersion"] = json!("obs.tlsstress.art/v2");
        },
    );
    b.edit("no-spec", "{\n  \"apiVersion\": \"obs.tlsstress.art/v1alpha1\",\n  \"kind\": \"Service\",\n  \"metadata\": {\n    \"name\": \"api\"\n  }\n}", "missing field `spec`", |d| {
        find(d, "Service", "api")
            .as_object_mut()
            .expect("doc")
            .remove("spec");
    });
    b.edit_last("second-stack", "\"kind\": \"Stack\"", "second Stack", |d| {
        let mut st = d[0].clone();
        st["metadata"]["name"] = json!("second");
        d.push(st);
    });
    b.edit("stack-project", "\"project\"", "project", |d| {
        d[0]["spec"]["project"] = json!("Bad Project!");
    });
    b.edit("stack-concurrency", "\"concurrency\"", "concurrency", |d| {
        d[0]["spec"]["concurrency"] = json!("many");
    });
    b.edit("stack-resync", "\"resyncPeriod\"", "resyncPeriod", |d| {
        d[0]["spec"]["resyncPeriod"] = json!("soon");
    });
    b.edit("network-field", "\"drivr\"", "drivr", |d| {
        find(d, "Network", "default")["spec"]["drivr"] = json!("bridge");
    });
    b.edit("port-conflict", "\"host\": 18081", "18081", |d| {
        find(d, "Service", "web")["spec"]["ports"] = json!([{"host": 18081, "container": 80}]);
        find(d, "Service", "api")["spec"]["ports"] = json!([{"host": 18081, "container": 81}]);
    });
    b.edit("job-schedule", "\"schedule\"", "schedule", |d| {
        d.push(
            json!({"apiVersion": API, "kind": "Job", "metadata": {"name": "names"},
            "spec": {"schedule": "every now and then", "dockerNames": {}}}),
        );
    });
    b.edit("job-body-field", "\"bogus\"", "bogus", |d| {
        d.push(
            json!({"apiVersion": API, "kind": "Job", "metadata": {"name": "names"},
            "spec": {"schedule": "@every 1m", "dockerNames": {"bogus": 1}}}),
        );
    });
    // --- the env file
    let mut with_env = b.base.clone();
    with_env[0]["spec"]["envFile"] = json!("secrets.env");
    let env_text = render_docs(&with_env);
    let (l, c) = locate(&env_text, "\"envFile\"");
    for (name, content, mode, msg) in [
        (
            "env-file-readable",
            "A=s3cr3t-canary-a\n",
            0o644,
            "readable by group or others",
        ),
        (
            "env-file-bad-line",
            "A=s3cr3t-canary-a\nthis is not a variable s3cr3t-canary-b\n",
            0o600,
            "line 2: expected NAME=value",
        ),
        (
            "env-file-bad-name",
            "1BAD=s3cr3t-canary-c\n",
            0o600,
            "not a valid variable name",
        ),
    ] {
        b.out.push(Hostile {
            name: name.into(),
            files: vec![
                ("stack.yaml".into(), env_text.clone().into_bytes()),
                ("secrets.env".into(), content.as_bytes().to_vec()),
            ],
            special: None,
            modes: vec![("secrets.env".into(), mode)],
            expect: Expect {
                file: "stack.yaml".into(),
                line: l,
                col: c,
                msg: msg.into(),
            },
        });
    }
    // --- raw text
    let text = render_docs(&b.base);
    b.extra(
        "tab-indent",
        "zz-tabs.yaml",
        "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata:\n\tname: tabbed\nspec: {image: x}\n",
        // Reported where the tab-indented key starts.
        "name: tabbed",
        "tabs",
    );
    // Saved half-way: the file ends inside canary's GEN value.
    let at = text.find("\"GEN\": \"0").expect("GEN") + "\"GEN\": \"0".len();
    let cut = text[..at].to_string();
    b.raw("truncated", cut, "\"0", "unclosed quote");
    b.raw(
        "duplicate-key",
        text.replacen("\"V\": \"1\"", "\"V\": \"1\",\n      \"V\": \"2\"", 1),
        "\"V\": \"2\"",
        "duplicate",
    );
    b.extra(
        "merge-key",
        "zz-merge.yaml",
        "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata:\n  name: merged\nspec:\n  <<: &d {restart: always}\n  image: x\n",
        "<<",
        "unknown field `<<`",
    );
    b.raw(
        "alias-bomb",
        format!(
            "{text}---\na: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n\
             c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n\
             e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n\
             g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"
        ),
        "*e",
        "200000 nodes",
    );
    let deep = format!("{text}---\n{}\n", "[".repeat(5000));
    let (l, c) = locate(&deep, "[[[");
    // The reader stops at depth 256, on the bracket that would open level 256.
    b.bytes(
        "deep-nesting",
        deep.into_bytes(),
        (l, c + 255),
        "recursion limit",
    );
    b.raw(
        "unclosed-quote",
        text.replacen("\"V\": \"1\"", "\"V\": \"1", 1),
        // The string runs on to the next quote (`"image"`); what follows is the error.
        "image\"",
        "trailing content",
    );
    let mut nul = text.clone().into_bytes();
    let (l, c) = locate(&text, "\"canary\"");
    let at = text.find("\"canary\"").expect("canary");
    nul[at + 1] = 0;
    b.bytes("nul-byte", nul, (l, c + 1), "unexpected character");
    b.extra(
        "garbage-file",
        "zz-garbage.yaml",
        "just: [some, text\nthat: is not\n",
        ": is not",
        "':' indicator",
    );
    b.extra(
        "scalar-document",
        "zz-scalar.yaml",
        "hello world\n",
        "hello",
        "must be a mapping",
    );
    b.extra(
        "list-document",
        "zz-list.yml",
        "- a\n- b\n",
        "- a",
        "must be a mapping",
    );
    b.out
}

/// Hostile inputs whose handling issue 11's core fixes change (another branch): today
/// they hang, are skipped, or are wrongly accepted or rejected. Run with `--ignored`
/// once those fixes are merged.
pub fn hostile_inputs(base: &str) -> Vec<Hostile> {
    let mut b = Builder {
        base: parse_docs(base),
        out: Vec::new(),
    };
    b.web_at(
        "resources",
        json!({"pidsLimit": -5}),
        "\"pidsLimit\"",
        "pidsLimit",
    );
    let text = render_docs(&b.base);
    let mut bad = text.clone().into_bytes();
    // The first character of the value on line 5 (`"name": "test"`) becomes 0xFF.
    let l5 = 5;
    let line_start: usize = text.lines().take(l5 - 1).map(|l| l.len() + 1).sum();
    let line = text.lines().nth(l5 - 1).expect("line 5");
    let col = line.rfind(": \"").expect("a string value on line 5") + 4;
    bad[line_start + col - 1] = 0xff;
    b.bytes("invalid-utf8-line5", bad, (l5, col), "UTF-8");
    b.special(
        "dangling-symlink",
        Special::Symlink {
            name: "ghost.yaml".into(),
            target: "does-not-exist.yaml".into(),
        },
        "ghost.yaml",
        "",
    );
    b.special(
        "symlink-loop",
        Special::Symlink {
            name: "loop.yaml".into(),
            target: "loop.yaml".into(),
        },
        "loop.yaml",
        "",
    );
    // A valid Service document outside the directory, reached by a symlink: loading
    // it would start a container nobody put in the desired state.
    let outsider = render_docs(&[svc_doc("outsider", service(json!({})))]);
    b.out.push(Hostile {
        name: "symlink-outside".into(),
        files: vec![
            ("stack.yaml".into(), render_docs(&b.base).into_bytes()),
            ("../outside-target.yaml".into(), outsider.into_bytes()),
        ],
        special: Some(Special::Symlink {
            name: "outside.yaml".into(),
            target: "../outside-target.yaml".into(),
        }),
        modes: Vec::new(),
        expect: Expect {
            file: "outside.yaml".into(),
            line: 0,
            col: 0,
            msg: String::new(),
        },
    });
    let mut docs = b.base.clone();
    find(&mut docs, "Service", "web")["spec"]["configFiles"] =
        json!([{"source": "config/pipe.conf", "target": "/etc/pipe.conf"}]);
    b.out.push(Hostile {
        name: "fifo-config-file".into(),
        files: vec![("stack.yaml".into(), render_docs(&docs).into_bytes())],
        special: Some(Special::Fifo {
            name: "config/pipe.conf".into(),
        }),
        modes: Vec::new(),
        expect: Expect {
            file: "stack.yaml".into(),
            line: 0,
            col: 0,
            msg: "pipe.conf".into(),
        },
    });
    b.special(
        "fifo-document",
        Special::Fifo {
            name: "pipe.yaml".into(),
        },
        "pipe.yaml",
        "",
    );
    b.out
}
