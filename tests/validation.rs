//! Table-driven validation tests over a corpus of desired-state directories, plus
//! hostile-input guards for the bounded YAML reader.
//!
//! Corpus layout (see `tests/corpus/README.md`):
//!
//! - `tests/corpus/invalid/<case>/`: a desired-state directory that must fail to load,
//!   with `expect.txt` listing every expected error, one per line:
//!   `FILE:LINE:COL: PATH: MESSAGE-SUBSTRING` (FILE relative to the case directory,
//!   `.` for the directory itself; PATH may be empty). Lines starting with `#` and blank
//!   lines are ignored. Every expected line must match an error exactly on
//!   file/line/column/path and by substring on the message, and every error must be
//!   matched by at least one line (several lines may check several parts of one
//!   message). Warnings are not checked.
//! - `tests/corpus/valid/<case>/`: must load with no error.
//! - Either may hold `modes.txt` (`FILE OCTAL-MODE` per line): git keeps no file modes,
//!   so the test sets them on its copy of the case before loading.
//!
//! Each case is copied to a temporary directory first, so tests never write into the
//! source tree. Set `CORPUS_DUMP=1` to print every case's actual diagnostics.

use obsd::desired::diag::Diagnostic;
use obsd::desired::load::{load_dir, LoadErrors, LoadOptions};
use obsd::desired::yaml::Limits;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn opts() -> LoadOptions {
    LoadOptions {
        process_env: Some(BTreeMap::new()),
        ..Default::default()
    }
}

/// One expected diagnostic from `expect.txt`.
#[derive(Debug)]
struct Expected {
    src_line: usize,
    file: String,
    line: usize,
    col: usize,
    path: String,
    message: String,
}

fn parse_expect_line(l: &str) -> Option<(String, usize, usize, String, String)> {
    let mut parts = l.splitn(4, ':');
    let file = parts.next()?.to_string();
    let line = parts.next()?.parse().ok()?;
    let col = parts.next()?.parse().ok()?;
    let rest = parts.next()?.strip_prefix(' ')?;
    // An empty PATH is written `FILE:L:C: : message`.
    let (path, message) = rest.split_once(": ")?;
    Some((file, line, col, path.to_string(), message.to_string()))
}

fn parse_expect(text: &str, case: &str) -> Vec<Expected> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim_end();
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        let (file, line, col, path, message) = parse_expect_line(l)
            .unwrap_or_else(|| panic!("{case}/expect.txt:{}: malformed line `{l}`", i + 1));
        out.push(Expected {
            src_line: i + 1,
            file,
            line,
            col,
            path,
            message,
        });
    }
    out
}

/// `FILE` of a diagnostic relative to the case directory (`.` for the directory).
fn rel_file(d: &Diagnostic, dir: &Path) -> String {
    match d.file.strip_prefix(dir) {
        Ok(p) if p.as_os_str().is_empty() => ".".to_string(),
        Ok(p) => p.display().to_string(),
        Err(_) => d.file.display().to_string(),
    }
}

fn render(d: &Diagnostic, dir: &Path) -> String {
    format!(
        "{}:{}:{}: {:?}: {}: {}",
        rel_file(d, dir),
        d.line,
        d.column,
        d.severity,
        d.path,
        d.message
    )
}

fn matches(e: &Expected, d: &Diagnostic, dir: &Path) -> bool {
    d.is_error()
        && rel_file(d, dir) == e.file
        && d.line == e.line
        && d.column == e.col
        && d.path == e.path
        && d.message.contains(&e.message)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let ft = entry.file_type().unwrap();
        if ft.is_dir() {
            copy_dir(&entry.path(), &target);
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn apply_modes(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(text) = std::fs::read_to_string(dir.join("modes.txt")) else {
        return;
    };
    for l in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (file, mode) = l.trim().split_once(' ').expect("modes.txt: `FILE MODE`");
        let mode = u32::from_str_radix(mode.trim(), 8).expect("modes.txt: octal mode");
        std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {file}: {e}"));
    }
}

/// Copies a case into a fresh temporary directory, applies its modes and loads it.
fn load_case(
    case_dir: &Path,
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<obsd::desired::DesiredState, LoadErrors>,
) {
    let tmp = tempfile::tempdir().unwrap();
    // The loader reports paths under the directory it was given; canonicalize so
    // prefixes strip cleanly even where the temp dir is behind a symlink.
    let dir = tmp.path().canonicalize().unwrap().join("case");
    copy_dir(case_dir, &dir);
    apply_modes(&dir);
    let res = load_dir(&dir, &opts());
    (tmp, dir, res)
}

fn cases(kind: &str) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(corpus_root().join(kind))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

fn dump() -> bool {
    std::env::var_os("CORPUS_DUMP").is_some()
}

#[test]
fn invalid_corpus() {
    let cases = cases("invalid");
    assert!(cases.len() >= 30, "corpus shrank: {} cases", cases.len());
    let mut failures = String::new();
    for (name, case_dir) in &cases {
        let expect_text = std::fs::read_to_string(case_dir.join("expect.txt"))
            .unwrap_or_else(|e| panic!("{name}: expect.txt: {e}"));
        let expected = parse_expect(&expect_text, name);
        assert!(!expected.is_empty(), "{name}: expect.txt lists no error");
        let (_tmp, dir, res) = load_case(case_dir);
        let actual: Vec<Diagnostic> = match res {
            Ok(_) => Vec::new(),
            Err(LoadErrors(d)) => d,
        };
        if dump() {
            println!("== {name}");
            for d in &actual {
                println!("   {}", render(d, &dir));
            }
        }
        let mut used = vec![false; actual.len()];
        let mut problems = Vec::new();
        for e in &expected {
            let hits: Vec<usize> = (0..actual.len())
                .filter(|&i| matches(e, &actual[i], &dir))
                .collect();
            hits.iter().for_each(|&i| used[i] = true);
            if hits.is_empty() {
                problems.push(format!(
                    "expected (expect.txt:{}) not reported: {}:{}:{}: {}: {}",
                    e.src_line, e.file, e.line, e.col, e.path, e.message
                ));
            }
        }
        for (i, d) in actual.iter().enumerate() {
            if !used[i] && d.is_error() {
                problems.push(format!("unexpected error: {}", render(d, &dir)));
            }
        }
        if !problems.is_empty() {
            writeln!(failures, "\n== case {name}").unwrap();
            for p in &problems {
                writeln!(failures, "  {p}").unwrap();
            }
            writeln!(failures, "  all actual diagnostics:").unwrap();
            if actual.is_empty() {
                writeln!(failures, "    (none: the directory loaded)").unwrap();
            }
            for d in &actual {
                writeln!(failures, "    {}", render(d, &dir)).unwrap();
            }
        }
    }
    assert!(failures.is_empty(), "corpus mismatches:{failures}");
}

#[test]
fn valid_corpus() {
    let cases = cases("valid");
    assert!(!cases.is_empty());
    let mut failures = String::new();
    for (name, case_dir) in &cases {
        let (_tmp, dir, res) = load_case(case_dir);
        match res {
            Ok(state) => {
                if dump() {
                    println!("== {name}: ok, {} warning(s)", state.warnings.len());
                }
                assert!(state.warnings.iter().all(|w| !w.is_error()));
            }
            Err(LoadErrors(d)) => {
                writeln!(failures, "\n== case {name} failed to load:").unwrap();
                for d in &d {
                    writeln!(failures, "    {}", render(d, &dir)).unwrap();
                }
            }
        }
    }
    assert!(failures.is_empty(), "valid cases rejected:{failures}");
}

#[test]
fn valid_full_contents() {
    // Spot checks that the full case loaded what it says, not merely that it loaded.
    let (_tmp, _dir, res) = load_case(&corpus_root().join("valid/full"));
    let s = res.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.services.len(), 4);
    assert_eq!(s.volumes.len(), 3);
    assert_eq!(s.networks.len(), 2);
    assert_eq!(s.jobs.len(), 5);
    let g = &s.services["grafana"].spec;
    assert_eq!(
        g.env["GF_SERVER_ROOT_URL"],
        "https://obs.example.test/grafana"
    );
    assert_eq!(g.env["GF_LOG_LEVEL"], "info");
    assert_eq!(g.env["GF_SERVER_SERVE_FROM_SUB_PATH"], "true");
    assert_eq!(g.env["GF_PRICE"], "$5");
    assert_eq!(
        s.env.get("GF_ADMIN_PASSWORD").map(|v| v.expose()),
        Some("not-a-real-secret")
    );
    let p = &s.services["prometheus"].spec;
    assert_eq!(p.labels["max-size"], "10m");
    assert_eq!(s.config_hashes["prometheus"].len(), 2);
    assert!(s.config_hashes["prometheus"].iter().all(|h| h.len() == 64));
    assert_eq!(s.volume_docker_name("grafana-data"), "obs_grafana_data");
    assert_eq!(
        s.volume_docker_name("prometheus-data"),
        "obs_prometheus-data"
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

// ------------------------------------------------------------------ hostile input

/// A guard against super-linear blow-ups (which take minutes to hours on these inputs),
/// not a performance figure: loose enough for a 2-core CI box running Docker tests
/// beside it (a load of ~1 s alone was seen at 5 s under that contention).
const BOUND: Duration = Duration::from_secs(20);

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Writes a valid baseline plus `name` = `content` into a temp dir and loads it with
/// `limits`, returning the diagnostics for `name` and the elapsed time.
fn load_hostile(name: &str, content: &[u8], limits: Option<Limits>) -> (Vec<Diagnostic>, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    copy_dir(&corpus_root().join("valid/minimal"), &dir);
    apply_modes(&dir);
    std::fs::write(dir.join(name), content).unwrap();
    let opts = LoadOptions { limits, ..opts() };
    // One hostile load at a time: the time bound is per load, not shared with other
    // tests of this binary running in parallel on a small machine.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let start = Instant::now();
    let res = load_dir(&dir, &opts);
    let elapsed = start.elapsed();
    if dump() {
        println!("{name}: load_dir took {elapsed:?}");
    }
    let diags = match res {
        Ok(s) => s.warnings,
        Err(LoadErrors(d)) => d,
    };
    let file = dir.join(name);
    (
        diags.into_iter().filter(|d| d.file == file).collect(),
        elapsed,
    )
}

fn assert_located_error(what: &str, diags: &[Diagnostic], elapsed: Duration, needle: &str) {
    assert!(elapsed < BOUND, "{what}: took {elapsed:?}");
    let hit = diags
        .iter()
        .find(|d| d.is_error() && d.message.contains(needle))
        .unwrap_or_else(|| panic!("{what}: no error containing `{needle}`; got {diags:#?}"));
    assert!(hit.line >= 1 && hit.column >= 1, "{what}: unlocated: {hit}");
}

#[test]
fn hostile_alias_bomb() {
    // Ten levels of ten aliases each: 10^10 nodes if expanded.
    let mut src = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let p = i - 1;
        let refs = vec![format!("*a{p}"); 10].join(", ");
        src.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let (diags, t) = load_hostile("bomb.yaml", src.as_bytes(), None);
    assert_located_error("alias bomb", &diags, t, "alias expansion");
}

#[test]
fn hostile_alias_bomb_of_maps() {
    // The same with mappings, which also exercises the duplicate-key check.
    let mut src =
        String::from("a0: &a0 {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x}\n");
    for i in 1..12 {
        let p = i - 1;
        let refs: Vec<String> = (0..8).map(|j| format!("k{j}: *a{p}")).collect();
        src.push_str(&format!("a{i}: &a{i} {{{}}}\n", refs.join(", ")));
    }
    let (diags, t) = load_hostile("bomb.yaml", src.as_bytes(), None);
    assert_located_error("map alias bomb", &diags, t, "alias expansion");
}

#[test]
fn hostile_deep_flow_sequence() {
    let n = 100_000;
    let src = format!("{}{}", "[".repeat(n), "]".repeat(n));
    let (diags, t) = load_hostile("deep.yaml", src.as_bytes(), None);
    // The parser's own recursion guard may fire before the reader's depth limit.
    assert_located_error("deep flow sequence", &diags, t, "");
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("nesting deeper") || d.message.contains("recursion limit")),
        "{diags:#?}"
    );
}

#[test]
fn hostile_deep_block_sequence() {
    // `- - - - …` on one line: 100 000 nested block sequences.
    let src = format!("{}x\n", "- ".repeat(100_000));
    let (diags, t) = load_hostile("deep.yaml", src.as_bytes(), None);
    assert_located_error("deep block sequence", &diags, t, "");
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("nesting deeper") || d.message.contains("recursion limit")),
        "{diags:#?}"
    );
}

#[test]
fn hostile_deep_block_mapping() {
    // Deep block nesting, each level indented one more space: ~100 levels fit in a
    // small file and must stop at the depth limit.
    let mut src = String::new();
    for i in 0..300 {
        src.push_str(&" ".repeat(i));
        src.push_str("k:\n");
    }
    let (diags, t) = load_hostile("deep.yaml", src.as_bytes(), None);
    assert_located_error("deep block mapping", &diags, t, "nesting deeper");
}

#[test]
fn hostile_ten_megabytes() {
    let src = "a: b\n".repeat(2 * 1024 * 1024);
    assert!(src.len() >= 10 * 1024 * 1024);
    let (diags, t) = load_hostile("big.yaml", src.as_bytes(), None);
    assert_located_error("10 MB file", &diags, t, "the limit is");
}

#[test]
fn hostile_many_keys_within_default_limit() {
    // As many distinct keys in one mapping as fit in the default 1 MiB: guards against
    // a duplicate-key check that is quadratic in the number of keys.
    let limit = Limits::default().max_bytes;
    let mut src = String::with_capacity(limit);
    let mut i = 0u32;
    loop {
        let line = format!("{i:x}:\n");
        if src.len() + line.len() > limit {
            break;
        }
        src.push_str(&line);
        i += 1;
    }
    let (diags, t) = load_hostile("keys.yaml", src.as_bytes(), None);
    assert!(t < BOUND, "{i} keys: took {t:?}");
    // Either the node limit or the envelope check rejects it; it must be located.
    assert!(
        diags.iter().any(|d| d.is_error() && d.line >= 1),
        "{diags:#?}"
    );
}

#[test]
fn hostile_many_invalid_env_names() {
    // One Service with as many invalid env names as fit in 1 MiB: each is its own
    // located error, and locating them must not be quadratic.
    let limit = Limits::default().max_bytes;
    let mut src = String::from(
        "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata:\n  name: env\nspec:\n  image: busybox:1.36\n  env:\n",
    );
    let mut i = 0u32;
    loop {
        let line = format!("    0{i:x}: v\n");
        if src.len() + line.len() > limit {
            break;
        }
        src.push_str(&line);
        i += 1;
    }
    let (diags, t) = load_hostile("env.yaml", src.as_bytes(), None);
    assert!(t < BOUND, "{i} env names: took {t:?}");
    assert!(
        diags.iter().any(|d| d.is_error() && d.line >= 1),
        "{} diagnostics",
        diags.len()
    );
}

#[test]
fn hostile_many_services_with_dangling_references() {
    // Thousands of small Services, each depending on a missing one: every error looks
    // for a "did you mean" among all declared names.
    let limit = Limits::default().max_bytes;
    let mut src = String::new();
    let mut i = 0u32;
    loop {
        let doc = format!(
            "---\napiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{image: busybox, dependsOn: [{{service: m{i}}}]}}\n"
        );
        if src.len() + doc.len() > limit {
            break;
        }
        src.push_str(&doc);
        i += 1;
    }
    let (diags, t) = load_hostile("many.yaml", src.as_bytes(), None);
    assert!(t < BOUND, "{i} services: took {t:?}");
    assert!(
        diags.iter().any(|d| d.is_error() && d.line >= 1),
        "{} diagnostics",
        diags.len()
    );
}

#[test]
fn hostile_million_keys_raised_size_limit() {
    // One million keys, with the size limit raised so the file is read: the node
    // limit must stop it.
    let limits = Limits {
        max_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let mut src = String::new();
    for i in 0..1_000_000u32 {
        src.push_str(&format!("{i:x}: 1\n"));
    }
    assert!(src.len() <= limits.max_bytes);
    let (diags, t) = load_hostile("keys.yaml", src.as_bytes(), Some(limits));
    assert_located_error("1M keys", &diags, t, "nodes");
}

#[test]
fn hostile_million_documents() {
    // One million empty documents (`---` lines): within a raised size limit, they
    // must be rejected by the node limit, not turned into a million diagnostics.
    let limits = Limits {
        max_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    };
    let src = "---\n".repeat(1_000_000);
    let (diags, t) = load_hostile("docs.yaml", src.as_bytes(), Some(limits));
    assert_located_error("1M documents", &diags, t, "nodes");
    assert!(diags.len() < 100, "{} diagnostics", diags.len());
}

#[test]
fn hostile_many_documents_within_default_limit() {
    // As many tiny documents as fit in 1 MiB: whatever is reported stays bounded.
    let src = "--- 1\n".repeat(Limits::default().max_bytes / 6);
    let (diags, t) = load_hostile("docs.yaml", src.as_bytes(), None);
    assert!(t < BOUND, "took {t:?}");
    assert!(diags.iter().any(|d| d.is_error()), "{diags:#?}");
    assert!(diags.iter().all(|d| d.line >= 1), "unlocated: {diags:#?}");
}

#[test]
fn hostile_binary_and_invalid_utf8() {
    let mut src = b"apiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\n".to_vec();
    src.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]);
    let (diags, t) = load_hostile("bin.yaml", &src, None);
    assert_located_error("invalid UTF-8", &diags, t, "UTF-8");
}

// ------------------------------------------------------------------ files that are not files
//
// Git cannot hold FIFOs, sockets or symlink loops, so these cases are built here. A load
// that blocked would hang the test: each load runs in a thread the test waits on with a
// generous deadline (a hang guard, not a timing assertion).

/// The valid baseline in a temp dir; `prep` adds the hostile entries; loads it in a
/// thread and returns every diagnostic.
fn load_with(prep: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf, Vec<Diagnostic>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap().join("ds");
    copy_dir(&corpus_root().join("valid/minimal"), &dir);
    apply_modes(&dir);
    prep(&dir);
    // Not alongside the hostile loads: their time bound is per load.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.clone();
    std::thread::spawn(move || {
        let _ = tx.send(match load_dir(&d, &opts()) {
            Ok(s) => s.warnings,
            Err(LoadErrors(e)) => e,
        });
    });
    let diags = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the load blocked (no answer within 60 s)");
    (tmp, dir, diags)
}

fn mkfifo(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// The one error on `file` whose message contains `needle`.
fn error_on<'a>(diags: &'a [Diagnostic], file: &Path, needle: &str) -> &'a Diagnostic {
    diags
        .iter()
        .find(|d| d.is_error() && d.file == file && d.message.contains(needle))
        .unwrap_or_else(|| {
            panic!(
                "no error on {} containing `{needle}`: {diags:#?}",
                file.display()
            )
        })
}

fn with_service_config(dir: &Path, source: &str) {
    std::fs::write(
        dir.join("svc.yaml"),
        format!("apiVersion: obs.tlsstress.art/v1alpha1\nkind: Service\nmetadata: {{name: app}}\nspec:\n  image: example/app:1\n  configFiles: [{{source: {source}, target: /etc/app.conf}}]\n"),
    )
    .unwrap();
}

#[test]
fn fifo_document_is_refused_without_blocking() {
    let (_t, dir, diags) = load_with(|d| mkfifo(&d.join("pipe.yaml")));
    error_on(&diags, &dir.join("pipe.yaml"), "is a FIFO");
}

#[test]
fn socket_document_is_refused() {
    let mut keep = None;
    let (_t, dir, diags) = load_with(|d| {
        keep = Some(std::os::unix::net::UnixListener::bind(d.join("sock.yaml")).unwrap());
    });
    error_on(&diags, &dir.join("sock.yaml"), "is a socket");
}

#[test]
fn fifo_config_file_is_refused_without_blocking() {
    let (_t, dir, diags) = load_with(|d| {
        std::fs::create_dir_all(d.join("config")).unwrap();
        mkfifo(&d.join("config/app.conf"));
        with_service_config(d, "config/app.conf");
    });
    let e = error_on(&diags, &dir.join("svc.yaml"), "is a FIFO");
    assert_eq!(e.path, "spec.configFiles[0].source", "{e}");
    assert!(e.message.contains("config/app.conf"), "{e}");
}

#[test]
fn fifo_inside_a_config_directory_is_refused() {
    let (_t, dir, diags) = load_with(|d| {
        std::fs::create_dir_all(d.join("config/app")).unwrap();
        std::fs::write(d.join("config/app/a.conf"), "a\n").unwrap();
        mkfifo(&d.join("config/app/b.conf"));
        with_service_config(d, "config/app");
    });
    error_on(&diags, &dir.join("svc.yaml"), "is a FIFO");
}

#[test]
fn fifo_env_file_is_refused_without_blocking() {
    let (_t, dir, diags) = load_with(|d| {
        let stack = std::fs::read_to_string(d.join("stack.yaml")).unwrap();
        std::fs::write(
            d.join("stack.yaml"),
            stack.replace("  project: obs\n", "  project: obs\n  envFile: .env\n"),
        )
        .unwrap();
        mkfifo(&d.join(".env"));
    });
    let e = error_on(&diags, &dir.join("stack.yaml"), "is a FIFO");
    assert_eq!(e.path, "spec.envFile", "{e}");
}

#[test]
fn oversized_config_file_is_refused_with_the_limit() {
    let (_t, dir, diags) = load_with(|d| {
        std::fs::create_dir_all(d.join("config")).unwrap();
        // Sparse: 65 MiB on paper, nothing on disk.
        let f = std::fs::File::create(d.join("config/big.bin")).unwrap();
        f.set_len(obsd::desired::config_files::MAX_CONFIG_FILE_BYTES + 1024 * 1024)
            .unwrap();
        with_service_config(d, "config/big.bin");
    });
    let e = error_on(&diags, &dir.join("svc.yaml"), "the limit is 64 MiB");
    assert!(e.message.contains("config/big.bin"), "{e}");
}

#[test]
fn config_file_at_the_limit_is_hashed() {
    let tmp = tempfile::tempdir().unwrap();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let f = std::fs::File::create(tmp.path().join("big.bin")).unwrap();
    f.set_len(obsd::desired::config_files::MAX_CONFIG_FILE_BYTES)
        .unwrap();
    let h = obsd::desired::config_files::hash_config_source(tmp.path(), "big.bin").unwrap();
    assert_eq!(h.len(), 64);
}

#[test]
fn unreadable_links_are_errors_naming_the_file() {
    let (_t, dir, diags) = load_with(|d| {
        use std::os::unix::fs::symlink;
        symlink("nowhere.yaml", d.join("dangling.yaml")).unwrap();
        symlink("loop-b.yaml", d.join("loop-a.yaml")).unwrap();
        symlink("loop-a.yaml", d.join("loop-b.yaml")).unwrap();
        let outside = d.parent().unwrap().join("outside.yaml");
        std::fs::write(
            &outside,
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Volume\nmetadata: {name: sneaky}\nspec: {}\n",
        )
        .unwrap();
        symlink(&outside, d.join("escape.yaml")).unwrap();
        std::fs::create_dir(d.join("dir.yaml")).unwrap();
        // A link inside the directory is fine.
        std::fs::write(
            d.join("real.yml.txt"),
            "apiVersion: obs.tlsstress.art/v1alpha1\nkind: Volume\nmetadata: {name: data}\nspec: {}\n",
        )
        .unwrap();
        symlink("real.yml.txt", d.join("linked.yaml")).unwrap();
    });
    error_on(&diags, &dir.join("dangling.yaml"), "dangling symlink");
    error_on(&diags, &dir.join("loop-a.yaml"), "symlink loop");
    error_on(&diags, &dir.join("loop-b.yaml"), "symlink loop");
    error_on(
        &diags,
        &dir.join("escape.yaml"),
        "outside the desired-state directory",
    );
    error_on(&diags, &dir.join("dir.yaml"), "is a directory");
    assert!(
        !diags.iter().any(|d| d.file == dir.join("linked.yaml")),
        "{diags:#?}"
    );
    // Exactly those five.
    assert_eq!(
        diags.iter().filter(|d| d.is_error()).count(),
        5,
        "{diags:#?}"
    );
}

#[test]
fn editor_and_hidden_files_are_ignored() {
    let (_t, dir, diags) = load_with(|d| {
        for name in [
            ".stack.yaml.swp",
            "stack.yaml~",
            ".#stack.yaml",
            "#stack.yaml#",
            "stack.yaml.bak",
            ".stack.yaml.tmp",
            "notes.txt",
        ] {
            std::fs::write(d.join(name), b"\x00\xff garbage: [").unwrap();
        }
    });
    assert!(!diags.iter().any(|d| d.is_error()), "{dir:?}: {diags:#?}");
}

#[test]
fn obsctl_validate_on_a_fifo_does_not_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ds");
    copy_dir(&corpus_root().join("valid/minimal"), &dir);
    mkfifo(&dir.join("pipe.yaml"));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .arg("validate")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("obsctl validate hangs on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pipe.yaml") && err.contains("FIFO"), "{err}");
}
