//! The public status page (`desired-state/config/status/index.html`) rendered by a real
//! browser, Debian's headless `chromium` (issue 11, item 8).
//!
//! Each case serves the page and one fixture `status.json` from a small HTTP server on
//! 127.0.0.1 (the page fetches `status.json` next to itself, which a `file://` page may
//! not), runs `chromium --headless --dump-dom` and asserts what a visitor reads: the
//! banner, the "updated" line, every surface row and the SLO cards. The fixtures are
//! produced by the status-page job's own `build_doc` and serializer, so the page is held
//! to the document the job really writes. A screenshot of every case is kept under
//! `target/test-artifacts/status-page/<case>.png` (not committed).
//!
//! `chromium` comes from `tests/setup.sh`; `OBSD_CHROMIUM` names another binary.

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use obsd::jobs::status_page::{build_doc, Health, SurfaceDoc};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/desired-state/config/status/index.html"
);

// ------------------------------------------------------------------------------ server

/// Serves `/` and `/index.html` (the page) and `/status.json` (the fixture, or 404 when
/// `None`) on 127.0.0.1; records the paths asked for.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(status_json: Option<String>) -> Server {
        let page = std::fs::read(PAGE).expect("read the status page");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, req2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => serve(s, &page, status_json.as_deref(), &req2),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
        });
        Server {
            port,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/index.html", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(s: TcpStream, page: &[u8], status_json: Option<&str>, requests: &Mutex<Vec<String>>) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut r = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) | Err(_) => break,
            Ok(_) if l == "\r\n" || l == "\n" => break,
            Ok(_) => {}
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    requests.lock().expect("requests").push(target);
    let (code, ctype, body): (&str, &str, &[u8]) = match (path.as_str(), status_json) {
        ("/" | "/index.html", _) => ("200 OK", "text/html; charset=utf-8", page),
        ("/status.json", Some(j)) => ("200 OK", "application/json", j.as_bytes()),
        _ => ("404 Not Found", "text/plain", b"not found"),
    };
    let mut w = s;
    let _ = write!(
        w,
        "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(body);
}

// ------------------------------------------------------------------------------ browser

/// The browser binary, checked once per test binary.
fn chromium() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(find_chromium)
}

fn find_chromium() -> String {
    let bin = std::env::var("OBSD_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let ok = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{bin}` does not run: the status-page tests need Debian's headless browser \
         (`apt-get install chromium`, done by tests/setup.sh; or set OBSD_CHROMIUM)"
    );
    bin
}

/// Runs headless chromium on `url` with `extra` arguments; its stdout.
fn run_chromium(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = Command::new(chromium())
        .args([
            "--headless",
            // Tests run as root in CI containers, where the sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--lang=en-US",
            // Virtual time: the page's fetch of status.json finishes before the dump.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a visitor reads, from the DOM chromium dumped after the page ran.
#[derive(Debug)]
struct Page {
    dom: String,
}

impl Page {
    /// Inner HTML of the element with this id.
    fn inner(&self, id: &str) -> String {
        let at = self
            .dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no element #{id} in the dump:\n{}", self.dom));
        let open = self.dom[..at].rfind('<').expect("tag start");
        inner_html(&self.dom[open..])
    }

    /// Visible text of the element with this id (tags stripped, whitespace collapsed).
    fn text(&self, id: &str) -> String {
        text(&self.inner(id))
    }

    /// The opening tag of the element with this id.
    fn tag(&self, id: &str) -> String {
        let at = self.dom.find(&format!("id=\"{id}\"")).expect("id");
        let open = self.dom[..at].rfind('<').expect("tag start");
        let end = open + self.dom[open..].find('>').expect("tag end");
        self.dom[open..=end].to_string()
    }

    fn banner(&self) -> String {
        self.text("overall-text")
    }

    /// Class attribute of the banner (`banner s-<status>`).
    fn banner_class(&self) -> String {
        attr(&self.tag("overall"), "class").unwrap_or_default()
    }

    /// The error line, `None` while it is hidden.
    fn error(&self) -> Option<String> {
        let tag = self.tag("error");
        (!tag.contains("hidden")).then(|| self.text("error"))
    }

    /// Surface rows: (dot class, dot title, cell texts).
    fn rows(&self) -> Vec<Row> {
        self.inner("surfaces")
            .split("<tr")
            .skip(1)
            .map(|tr| {
                let dot = tr
                    .find("<span")
                    .map(|i| &tr[i..i + tr[i..].find('>').unwrap_or(0) + 1]);
                Row {
                    dot_class: dot.and_then(|d| attr(d, "class")),
                    dot_title: dot.and_then(|d| attr(d, "title")),
                    cells: tr
                        .split("<td")
                        .skip(1)
                        .map(|td| text(&format!("<td{td}")))
                        .collect(),
                }
            })
            .collect()
    }
}

#[derive(Debug)]
struct Row {
    dot_class: Option<String>,
    dot_title: Option<String>,
    cells: Vec<String>,
}

/// `s` starts at an opening tag; the HTML between it and its matching closing tag.
fn inner_html(s: &str) -> String {
    const VOID: [&str; 6] = ["br", "img", "input", "meta", "link", "hr"];
    let start = s.find('>').expect("tag end") + 1;
    let mut depth = 1usize;
    let mut i = start;
    while let Some(rel) = s[i..].find('<') {
        let at = i + rel;
        let end = at + s[at..].find('>').expect("tag end");
        let tag = &s[at + 1..end];
        if let Some(_closing) = tag.strip_prefix('/') {
            depth -= 1;
            if depth == 0 {
                return s[start..at].to_string();
            }
        } else {
            let name: String = tag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if !tag.ends_with('/') && !VOID.contains(&name.as_str()) && !tag.starts_with('!') {
                depth += 1;
            }
        }
        i = end + 1;
    }
    panic!("unclosed element in {s}");
}

/// Text content of an HTML fragment: tags removed, entities of this page decoded,
/// whitespace collapsed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", " ");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let end = at + tag[at..].find('"')?;
    Some(tag[at..end].to_string())
}

/// Serves `status` (a `status.json` body, or none: 404), loads the page in chromium,
/// keeps a screenshot named `case`, returns the rendered DOM.
fn render(case: &str, status: Option<&Value>) -> Page {
    let body = status.map(|v| serde_json::to_string_pretty(v).expect("json"));
    let server = Server::start(body);
    let dom = run_chromium(&server.url(), &["--dump-dom".to_string()]);
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("/status.json")),
        "the page never asked for status.json: {:?}",
        server.requests()
    );

    let dir = artifacts_dir();
    std::fs::create_dir_all(&dir).expect("mkdir test-artifacts");
    let png = dir.join(format!("{case}.png"));
    let _ = std::fs::remove_file(&png);
    run_chromium(
        &server.url(),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1000,760".to_string(),
        ],
    );
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    let head = std::fs::read(&png).unwrap_or_default();
    assert!(
        size > 10_000 && head.starts_with(b"\x89PNG"),
        "screenshot {} missing or blank ({size} bytes)",
        png.display()
    );
    println!("{case}: screenshot {} ({size} bytes)", png.display());
    Page { dom }
}

/// `target/test-artifacts/status-page/` (or under `CARGO_TARGET_DIR`).
fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("test-artifacts").join("status-page")
}

// ------------------------------------------------------------------------------ fixtures

#[allow(clippy::too_many_arguments)]
fn surface(
    name: &str,
    status: Health,
    d1: Option<f64>,
    d7: Option<f64>,
    d30: Option<f64>,
    latency_ms: Option<f64>,
) -> SurfaceDoc {
    SurfaceDoc {
        name: name.into(),
        url: format!("https://{name}.tlsstress.art/"),
        status,
        uptime_24h: d1,
        uptime_7d: d7,
        uptime_30d: d30,
        latency_ms,
    }
}

/// The document the job writes, generated `age` ago.
fn doc(age: ChronoDuration, surfaces: Vec<SurfaceDoc>) -> Value {
    let d = build_doc(Utc::now() - age, 0.999, surfaces);
    serde_json::to_value(d).expect("status doc")
}

fn fresh() -> ChronoDuration {
    ChronoDuration::seconds(20)
}

/// No cell, card or banner may claim 100 % or "operational" where there is no data.
fn assert_no_claims(p: &Page) {
    for id in ["surfaces", "slo-uptime", "slo-budget", "overall-text"] {
        let t = p.text(id);
        assert!(
            !t.contains("100") && !t.to_lowercase().contains("operational"),
            "#{id} claims something it has no data for: {t:?}"
        );
    }
}

// ------------------------------------------------------------------------------ cases

#[test]
fn operational() {
    let p = render(
        "operational",
        Some(&doc(
            fresh(),
            vec![
                surface(
                    "app",
                    Health::Operational,
                    Some(1.0),
                    Some(0.9995),
                    Some(0.99912),
                    Some(123.4),
                ),
                surface(
                    "admin",
                    Health::Operational,
                    Some(0.999_999),
                    Some(0.9999),
                    Some(0.9996),
                    Some(1234.0),
                ),
            ],
        )),
    );
    assert_eq!(p.banner(), "All systems operational");
    assert!(
        p.banner_class().contains("s-operational"),
        "{}",
        p.banner_class()
    );
    let updated = p.text("generated");
    assert!(
        updated.starts_with("updated ") && updated.ends_with("s ago)"),
        "{updated:?}"
    );
    assert_eq!(p.error(), None);
    let rows = p.rows();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0].cells,
        ["app", "100.000 %", "99.950 %", "99.912 %", "123 ms"]
    );
    // 0.999999 is cut, never rounded up to 100 %.
    assert_eq!(
        rows[1].cells,
        ["admin", "99.999 %", "99.990 %", "99.960 %", "1.23 s"]
    );
    for r in &rows {
        assert_eq!(r.dot_class.as_deref(), Some("dot s-operational"), "{r:?}");
        assert_eq!(r.dot_title.as_deref(), Some("operational"));
    }
    assert_eq!(p.text("slo-target"), "99.9 %");
    // Mean of the two 30-day uptimes: 0.99936 → 36 % of the budget used.
    assert_eq!(p.text("slo-uptime"), "99.936 %");
    assert_eq!(p.text("slo-budget"), "36.0 %");
}

#[test]
fn degraded() {
    let p = render(
        "degraded",
        Some(&doc(
            fresh(),
            vec![
                surface(
                    "app",
                    Health::Operational,
                    Some(1.0),
                    Some(1.0),
                    Some(1.0),
                    Some(80.0),
                ),
                surface(
                    "admin",
                    Health::Down,
                    Some(0.75),
                    Some(0.99),
                    Some(0.998),
                    Some(2500.0),
                ),
                surface("new", Health::NoData, None, None, None, None),
            ],
        )),
    );
    assert_eq!(p.banner(), "Degraded performance");
    assert!(p.banner_class().contains("s-degraded"));
    let rows = p.rows();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[1].cells[0], "admin");
    assert_eq!(rows[1].dot_class.as_deref(), Some("dot s-down"));
    assert_eq!(rows[1].dot_title.as_deref(), Some("down"));
    assert_eq!(rows[1].cells[1], "75.000 %");
    assert_eq!(rows[1].cells[4], "2.50 s");
    // A surface without data reads "no data" in every cell, never 100 %.
    assert_eq!(
        rows[2].cells,
        ["new", "no data", "no data", "no data", "no data"]
    );
    assert_eq!(rows[2].dot_class.as_deref(), Some("dot s-no_data"));
    // Mean 30-day uptime 0.999 = the target: the budget is exactly spent.
    assert_eq!(p.text("slo-uptime"), "99.900 %");
    assert_eq!(p.text("slo-budget"), "exhausted");
}

#[test]
fn down() {
    let p = render(
        "down",
        Some(&doc(
            fresh(),
            vec![
                surface("app", Health::Down, Some(0.5), Some(0.93), Some(0.98), None),
                surface(
                    "admin",
                    Health::Down,
                    Some(0.0),
                    Some(0.9),
                    Some(0.97),
                    None,
                ),
            ],
        )),
    );
    assert_eq!(p.banner(), "Major outage");
    assert!(p.banner_class().contains("s-down"));
    let rows = p.rows();
    assert!(
        rows.iter()
            .all(|r| r.dot_class.as_deref() == Some("dot s-down")),
        "{rows:?}"
    );
    assert_eq!(
        rows[1].cells,
        ["admin", "0.000 %", "90.000 %", "97.000 %", "no data"]
    );
    assert_eq!(p.text("slo-uptime"), "97.500 %");
    assert_eq!(p.text("slo-budget"), "exhausted");
}

#[test]
fn no_data() {
    let p = render(
        "no-data",
        Some(&doc(
            fresh(),
            vec![
                surface("app", Health::NoData, None, None, None, None),
                surface("admin", Health::NoData, None, None, None, None),
            ],
        )),
    );
    assert_eq!(p.banner(), "No data");
    assert!(p.banner_class().contains("s-no_data"));
    let rows = p.rows();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r.cells[1..], ["no data", "no data", "no data", "no data"]);
        assert_eq!(r.dot_class.as_deref(), Some("dot s-no_data"));
    }
    assert_eq!(p.text("slo-uptime"), "no data");
    assert_eq!(p.text("slo-budget"), "no data");
    assert_no_claims(&p);

    // A job with no surfaces configured at all: one "no data" row.
    let p = render("no-surfaces", Some(&doc(fresh(), vec![])));
    assert_eq!(p.banner(), "No data");
    let rows = p.rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].cells, ["no data"]);
    assert_no_claims(&p);
}

/// A document the job wrote two hours ago (the job stopped, Prometheus went away): the
/// page must not tell a visitor that everything is operational now.
#[test]
fn stale() {
    let surfaces = || {
        vec![surface(
            "app",
            Health::Operational,
            Some(1.0),
            Some(1.0),
            Some(0.9995),
            Some(90.0),
        )]
    };
    let p = render("stale", Some(&doc(ChronoDuration::hours(2), surfaces())));
    assert_eq!(p.banner(), "No data (status data is stale)");
    assert!(p.banner_class().contains("s-no_data"));
    let updated = p.text("generated");
    assert!(updated.ends_with("(120 min ago)"), "{updated:?}");
    let rows = p.rows();
    // The figures are history and stay; the dot does not claim a current status.
    assert_eq!(
        rows[0].cells[..4],
        ["app", "100.000 %", "100.000 %", "99.950 %"]
    );
    assert_eq!(
        rows[0].dot_class.as_deref(),
        Some("dot s-no_data"),
        "{rows:?}"
    );
    assert_eq!(rows[0].dot_title.as_deref(), Some("no current data"));
    assert!(
        !p.inner("surfaces").contains("s-operational"),
        "a green dot on stale data"
    );

    // Just inside the 15-minute window it is still current.
    let p = render(
        "fresh-14min",
        Some(&doc(ChronoDuration::minutes(14), surfaces())),
    );
    assert_eq!(p.banner(), "All systems operational");

    // A time ahead of the browser's clock is not "fresh" either.
    let p = render("future", Some(&doc(ChronoDuration::hours(-3), surfaces())));
    assert_eq!(p.banner(), "No data (status data is stale)");
    assert!(
        p.text("generated").contains("clock skew"),
        "{}",
        p.text("generated")
    );
    assert!(!p.inner("surfaces").contains("s-operational"));
}

/// No `status.json` (the job never ran) or a broken one: an error line and no claims.
#[test]
fn missing_or_broken_document() {
    let p = render("missing", None);
    assert_eq!(p.banner(), "No data");
    let err = p.error().expect("an error line");
    assert!(
        err.contains("Could not load the current status") && err.contains("404"),
        "{err:?}"
    );
    assert_eq!(p.text("generated"), "last update: unknown");
    assert_no_claims(&p);

    // Hand-made nonsense: unknown statuses, strings for numbers, ratios over 1.
    let generated = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let weird = serde_json::json!({
        "generated_at": generated,
        "overall": "fine",
        "surfaces": [
            {"name": "app", "url": "javascript:alert(1)", "status": "green",
             "uptime_24h": "1", "uptime_7d": 250, "uptime_30d": null, "latency_ms": -1},
        ],
        "slo": {"target": "0.999", "uptime_30d": "1", "error_budget_remaining": null},
    });
    let p = render("nonsense", Some(&weird));
    assert_eq!(p.banner(), "No data");
    let rows = p.rows();
    assert_eq!(
        rows[0].cells,
        ["app", "no data", "no data", "no data", "no data"]
    );
    assert!(
        !p.inner("surfaces").contains("<a "),
        "a non-https link was rendered"
    );
    assert_no_claims(&p);
}
