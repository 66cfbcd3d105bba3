//! The backup job's non-volume sources (Cloudflare, Stripe, Auth0) against fakes on
//! 127.0.0.1 that check auth, paging and request shapes, into moto's S3 server: one
//! manifest entry and one metric series per source, one failing source alone, the
//! same-day re-run, and the canary rule (no planted secret in any object, log line,
//! error or metric).

mod backup_sources_support;
mod jobs_support;
mod moto_support;

use backup_sources_support::*;
use chrono::{TimeZone, Utc};
use jobs_support::{context, read_textfile, FixedClock};
use obsd::desired::model::job::BackupJob;
use obsd::docker::engine::Engine;
use obsd::jobs::backup::{self, manifest::Manifest, s3::S3};
use obsd::jobs::{JobContext, JobError};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const AKID: &str = "AKIDSOURCESTEST";
const S3_SECRET: &str = "CANARYr2SecretKey5566";

/// Every log line of this test binary (a global subscriber writing here).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(w.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Peers {
    moto: Moto,
    cf: Fake,
    stripe: Fake,
    auth0: Fake,
}

async fn peers(bucket: &str) -> Peers {
    Peers {
        moto: moto(bucket).await,
        cf: cloudflare().await,
        stripe: stripe().await,
        auth0: auth0().await,
    }
}

fn job(p: &Peers, bucket: &str, stripe_pages: u32) -> BackupJob {
    serde_json::from_value(json!({
        "bucket": bucket,
        "endpoint": p.moto.url,
        "region": "us-east-1",
        "textfile": "backup.prom",
        "sources": {
            "cloudflare": {"apiBase": p.cf.base(), "tokenEnv": "CF_BACKUP_API_TOKEN", "accountIdEnv": "CF_ACCOUNT_ID"},
            "stripe": {"apiBase": p.stripe.base(), "maxPages": stripe_pages},
            "auth0": {}
        }
    }))
    .unwrap()
}

fn ctx_at(dir: &std::path::Path, day: u32, p: &Peers) -> JobContext {
    ctx_with(dir, day, p, &[])
}

fn ctx_with(dir: &std::path::Path, day: u32, p: &Peers, extra: &[(&str, &str)]) -> JobContext {
    let auth0 = p.auth0.base();
    let mut values = vec![
        ("R2_ACCESS_KEY_ID", AKID),
        ("R2_SECRET_ACCESS_KEY", S3_SECRET),
        ("CF_BACKUP_API_TOKEN", CF_TOKEN),
        ("CF_ACCOUNT_ID", CF_ACCOUNT),
        ("STRIPE_BACKUP_KEY", STRIPE_KEY),
        ("AUTH0_DOMAIN", auth0.as_str()),
        ("AUTH0_BACKUP_CLIENT_ID", AUTH0_ID),
        ("AUTH0_BACKUP_CLIENT_SECRET", AUTH0_SECRET),
    ];
    values.extend_from_slice(extra);
    let mut ctx = context(
        dir,
        &values,
        FixedClock::at(Utc.with_ymd_and_hms(2026, 12, day, 3, 30, 0).unwrap()),
    );
    ctx.request_timeout = Duration::from_secs(20);
    ctx
}

fn bucket(p: &Peers, b: &str) -> S3 {
    S3::new(
        reqwest::Client::new(),
        &p.moto.url,
        b,
        "us-east-1",
        AKID,
        S3_SECRET,
    )
    .unwrap()
}

async fn run(ctx: &JobContext, job: &BackupJob) -> Result<(), JobError> {
    logs();
    let engine = Engine::connect().unwrap();
    backup::run_with(ctx, "backup", job, &engine, &CancellationToken::new()).await
}

async fn manifest(s3: &S3, date: &str) -> Manifest {
    backup::load_manifest(s3, date).await.unwrap()
}

/// The plain content of a document (zstd object, checked against its name).
async fn document(s3: &S3, m: &Manifest, kind: &str, path: &str) -> Value {
    let e = m.exports.iter().find(|e| e.kind == kind).unwrap();
    let d = e
        .documents
        .iter()
        .find(|d| d.path == path)
        .unwrap_or_else(|| {
            panic!(
                "{kind}: no document {path} in {:?}",
                e.documents.iter().map(|d| &d.path).collect::<Vec<_>>()
            )
        });
    let raw = s3.get(&d.object).await.unwrap().unwrap();
    let plain = zstd::decode_all(&raw[..]).unwrap();
    serde_json::from_slice(&plain).unwrap()
}

fn source_metric(ctx: &JobContext, name: &str, kind: &str) -> Option<f64> {
    read_textfile(ctx, "backup.prom").value(name, &[("source", kind), ("kind", kind)])
}

/// Lists and reads every object of the bucket (raw and, when zstd, decompressed) and
/// asserts no canary is in any of them.
async fn assert_bucket_secret_free(s3: &S3) -> usize {
    let objects = s3.list("").await.unwrap();
    assert!(!objects.is_empty());
    for o in &objects {
        let raw = s3.get(&o.key).await.unwrap().unwrap();
        let mut texts = vec![String::from_utf8_lossy(&raw).to_string(), o.key.clone()];
        if let Ok(plain) = zstd::decode_all(&raw[..]) {
            texts.push(String::from_utf8_lossy(&plain).to_string());
        }
        for t in &texts {
            for c in CANARIES.iter().chain([&S3_SECRET]) {
                assert!(!t.contains(c), "{c} reached the bucket in {}", o.key);
            }
        }
    }
    objects.len()
}

fn assert_secret_free(what: &str, text: &str) {
    for c in CANARIES.iter().chain([&S3_SECRET]) {
        assert!(!text.contains(c), "{c} reached the {what}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_source_exported_secret_free_and_a_same_day_rerun_uploads_nothing() {
    let p = peers("src-all").await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_at(dir.path(), 1, &p);
    let job = job(&p, "src-all", 20);
    run(&ctx, &job).await.expect("a full run");
    let s3 = bucket(&p, "src-all");
    let m = manifest(&s3, "2026-12-01").await;
    let kinds: Vec<&str> = m.exports.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["cloudflare", "stripe", "auth0"]);
    assert!(m.failed.is_empty(), "{:?}", m.failed);

    // Cloudflare: every zone of both pages, every record of both pages, one document
    // per zone and kind; the R2 bucket's settings (CORS unset = null).
    let cf = m.exports.iter().find(|e| e.kind == "cloudflare").unwrap();
    let mut paths: Vec<&str> = cf.documents.iter().map(|d| d.path.as_str()).collect();
    paths.sort();
    let mut want = vec!["r2/obs-backup.json"];
    for z in ["example.com", "example.net", "example.org"] {
        for k in ["dns_records", "pagerules", "rulesets", "zone"] {
            want.push(Box::leak(format!("zones/{z}/{k}.json").into_boxed_str()));
        }
    }
    want.sort();
    assert_eq!(paths, want);
    let dns = document(&s3, &m, "cloudflare", "zones/example.net/dns_records.json").await;
    let ids: Vec<&str> = dns
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["z3-r1", "z3-r2"]);
    assert_eq!(dns[0]["content"], "192.0.2.1");
    let rules = document(&s3, &m, "cloudflare", "zones/example.com/rulesets.json").await;
    assert_eq!(rules[0]["rules"][0]["expression"], "ip.src eq 192.0.2.9");
    let r2 = document(&s3, &m, "cloudflare", "r2/obs-backup.json").await;
    assert_eq!(r2["lock"]["rules"][0]["id"], "keep7");
    assert!(r2["cors"].is_null());
    assert!(
        cf.removed
            .iter()
            .any(|r| r == "zones/example.com/dns_records.json:$[0].meta.private_key"),
        "{:?}",
        cf.removed
    );
    let cf_reqs = p.cf.requests();
    assert!(cf_reqs
        .iter()
        .any(|r| r.path == "/zones" && r.q("page") == Some("2")));
    assert_eq!(
        cf_reqs
            .iter()
            .filter(|r| r.path == "/zones/z2/dns_records")
            .count(),
        2
    );

    // Stripe: all three pages of products, followed with starting_after; the webhook
    // endpoint without its secret.
    let products = document(&s3, &m, "stripe", "products.json").await;
    let ids: Vec<&str> = products
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["prod_3", "prod_2", "prod_1"]);
    let hooks = document(&s3, &m, "stripe", "webhook_endpoints.json").await;
    assert_eq!(hooks[0]["url"], "https://example.com/hook");
    assert!(hooks[0].get("secret").is_none());
    let st = m.exports.iter().find(|e| e.kind == "stripe").unwrap();
    assert!(
        st.removed
            .contains(&"webhook_endpoints.json:$[0].secret".to_string()),
        "{:?}",
        st.removed
    );
    assert!(st.truncated.is_empty());
    assert_eq!(st.documents.len(), 5);

    // Auth0: one token, then every list with it; both pages of clients; secret fields
    // gone and their paths recorded.
    let a = p.auth0.requests();
    assert_eq!(a.iter().filter(|r| r.path == "/oauth/token").count(), 1);
    assert_eq!(a.iter().filter(|r| r.path == "/api/v2/clients").count(), 2);
    let clients = document(&s3, &m, "auth0", "clients.json").await;
    assert_eq!(clients.as_array().unwrap().len(), 102);
    assert_eq!(
        clients[0]["token_endpoint_auth_method"],
        "client_secret_post"
    );
    assert!(clients[0].get("client_secret").is_none());
    let conns = document(&s3, &m, "auth0", "connections.json").await;
    assert_eq!(
        conns[0]["options"],
        json!({"client_id": "goog", "scope": ["email"]})
    );
    let au = m.exports.iter().find(|e| e.kind == "auth0").unwrap();
    for want in [
        "clients.json:$[0].client_secret",
        "clients.json:$[101].signing_keys",
        "clients.json:$[0].encryption_key",
        "connections.json:$[0].options.client_secret",
        "actions.json:$[0].secrets",
        "tenant_settings.json:$.smtp_password",
    ] {
        assert!(
            au.removed.iter().any(|r| r == want),
            "{want} not in {:?}",
            au.removed
        );
    }

    // Metrics: one series per source, all 1.
    for k in ["cloudflare", "stripe", "auth0"] {
        assert_eq!(
            source_metric(&ctx, "backup_r2_source_success", k),
            Some(1.0),
            "{k}"
        );
        assert!(source_metric(&ctx, "backup_r2_source_bytes", k).unwrap() > 0.0);
        assert!(source_metric(&ctx, "backup_r2_source_objects", k).unwrap() > 0.0);
        assert!(
            source_metric(&ctx, "backup_r2_source_last_success_timestamp_seconds", k).is_some()
        );
    }
    let tf = read_textfile(&ctx, "backup.prom");
    assert_eq!(tf.value("backup_r2_run_success", &[]), Some(1.0));

    // The same day again: nothing uploaded, no provider asked.
    let before = s3.list("").await.unwrap().len();
    let asked = (
        p.cf.requests().len(),
        p.stripe.requests().len(),
        p.auth0.requests().len(),
    );
    run(&ctx, &job).await.expect("the re-run");
    assert_eq!(s3.list("").await.unwrap().len(), before);
    assert_eq!(
        read_textfile(&ctx, "backup.prom").value("backup_r2_objects_uploaded", &[]),
        Some(0.0)
    );
    assert_eq!(
        (
            p.cf.requests().len(),
            p.stripe.requests().len(),
            p.auth0.requests().len()
        ),
        asked
    );
    for k in ["cloudflare", "stripe", "auth0"] {
        assert_eq!(
            source_metric(&ctx, "backup_r2_source_success", k),
            Some(1.0),
            "{k}"
        );
    }

    // The next day: unchanged documents are shared, only the manifest is new.
    let ctx2 = ctx_at(dir.path(), 2, &p);
    run(&ctx2, &job).await.expect("day 2");
    let after = s3.list("").await.unwrap();
    assert_eq!(
        after.len(),
        before + 1,
        "{:?}",
        after.iter().map(|o| &o.key).collect::<Vec<_>>()
    );

    // The canary rule: bucket, logs, metrics.
    assert_bucket_secret_free(&s3).await;
    let text = std::fs::read_to_string(dir.path().join("textfiles/backup.prom")).unwrap();
    assert_secret_free("metrics", &text);
    let log = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    assert!(log.contains("source exported"), "the log capture works");
    assert_secret_free("logs", &log);
    let state = std::fs::read_to_string(dir.path().join("state/jobs/backup.backup.json")).unwrap();
    assert_secret_free("state", &state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_failing_alone_fails_the_run_and_only_its_series() {
    let p = peers("src-fail").await;
    let dir = tempfile::tempdir().unwrap();
    let job = job(&p, "src-fail", 20);
    let s3 = bucket(&p, "src-fail");
    let kinds = ["cloudflare", "stripe", "auth0"];
    for (i, failing) in kinds.iter().enumerate() {
        let day = 3 + i as u32;
        let ctx = ctx_at(dir.path(), day, &p);
        for (k, f) in kinds.iter().zip([&p.cf, &p.stripe, &p.auth0]) {
            f.broken.store(k == failing, Ordering::SeqCst);
        }
        let err = run(&ctx, &job)
            .await
            .expect_err("a failing source fails the run");
        let msg = err.to_string();
        assert!(matches!(err, JobError::Partial(_)), "{msg}");
        assert!(msg.contains(failing), "{msg}");
        assert_secret_free("error", &msg);
        for k in kinds {
            let want = if k == *failing { 0.0 } else { 1.0 };
            assert_eq!(
                source_metric(&ctx, "backup_r2_source_success", k),
                Some(want),
                "{failing} failing: {k}"
            );
        }
        assert_eq!(
            read_textfile(&ctx, "backup.prom").value("backup_r2_run_success", &[]),
            Some(0.0)
        );
        // Its last success stays the one of the day before (none on the first day).
        let last = source_metric(
            &ctx,
            "backup_r2_source_last_success_timestamp_seconds",
            failing,
        );
        let before = (day > 3).then(|| {
            Utc.with_ymd_and_hms(2026, 12, day - 1, 3, 30, 0)
                .unwrap()
                .timestamp() as f64
        });
        assert_eq!(last, before, "{failing}");
        let m = manifest(&s3, &format!("2026-12-0{day}")).await;
        assert_eq!(m.failed.len(), 1);
        assert_eq!(m.failed[0].kind, *failing);
        let got: Vec<&str> = m.exports.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            got,
            kinds
                .iter()
                .filter(|k| *k != failing)
                .copied()
                .collect::<Vec<_>>()
        );
    }
    assert_bucket_secret_free(&s3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_list_longer_than_the_cap_is_cut_and_flagged() {
    let p = peers("src-cap").await;
    let dir = tempfile::tempdir().unwrap();
    let ctx = ctx_at(dir.path(), 9, &p);
    run(&ctx, &job(&p, "src-cap", 2))
        .await
        .expect("a capped export still succeeds");
    let s3 = bucket(&p, "src-cap");
    let m = manifest(&s3, "2026-12-09").await;
    let st = m.exports.iter().find(|e| e.kind == "stripe").unwrap();
    assert_eq!(st.truncated, ["products: more than 2 pages"]);
    let products = document(&s3, &m, "stripe", "products.json").await;
    assert_eq!(products.as_array().unwrap().len(), 2);
    assert_eq!(
        source_metric(&ctx, "backup_r2_source_truncated", "stripe"),
        Some(1.0)
    );
    assert_eq!(
        source_metric(&ctx, "backup_r2_source_truncated", "auth0"),
        Some(0.0)
    );
}

fn sh(dir: &std::path::Path, script: &str) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn mirror_keys(s3: &S3) -> Vec<String> {
    let mut k: Vec<String> = s3
        .list("mirror/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_mirror_moves_only_what_changed_and_github_bundles_restore() {
    const TBI_KEY: &str = "CANARYtbiReadOnlySecret";
    const GH_TOKEN: &str = "ghp_CANARYgithubToken";
    let m = moto("src-mir").await;
    let http = reqwest::Client::new();
    assert!(http
        .put(format!("{}/tbi-images", m.url))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let src = S3::new(
        http.clone(),
        &m.url,
        "tbi-images",
        "us-east-1",
        "AKIDTBI",
        TBI_KEY,
    )
    .unwrap();
    for (k, v) in [
        ("img/a.png", "aaaa"),
        ("img/b.png", "bbbbbb"),
        ("img/c.png", "cc"),
    ] {
        src.put_once(k, v.as_bytes().to_vec().into()).await.unwrap();
    }
    // A bare repository with two branches, over file://.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(d, "mkdir -p gh/acme && git init -q --bare gh/acme/site.git && git init -q work && cd work && git -c user.name=t -c user.email=t@e commit -q --allow-empty -m one && echo hi > f && git add f && git -c user.name=t -c user.email=t@e commit -q -m two && git branch feature && git push -q ../gh/acme/site.git HEAD:refs/heads/main feature && cd ../gh/acme/site.git && git symbolic-ref HEAD refs/heads/main");
    let head = sh(&d.join("work"), "git rev-parse HEAD");
    let job = |repos: &[&str]| -> BackupJob {
        serde_json::from_value(json!({
            "bucket": "src-mir",
            "endpoint": m.url,
            "region": "us-east-1",
            "textfile": "backup.prom",
            "sources": {
                "s3Mirror": {"endpoint": m.url, "bucket": "tbi-images", "prefix": "img/"},
                "github": {"repos": repos, "urlBase": format!("file://{}/gh", d.display()), "tokenEnv": "GITHUB_BACKUP_TOKEN"}
            }
        }))
        .unwrap()
    };
    let ctx = |day: u32| {
        let mut c = context(
            d,
            &[
                ("R2_ACCESS_KEY_ID", AKID),
                ("R2_SECRET_ACCESS_KEY", S3_SECRET),
                ("BACKUP_AWS_ACCESS_KEY_ID", "AKIDTBI"),
                ("BACKUP_AWS_SECRET_ACCESS_KEY", TBI_KEY),
                ("GITHUB_BACKUP_TOKEN", GH_TOKEN),
            ],
            FixedClock::at(Utc.with_ymd_and_hms(2026, 12, day, 3, 30, 0).unwrap()),
        );
        c.request_timeout = Duration::from_secs(20);
        c
    };
    let dest = S3::new(
        http.clone(),
        &m.url,
        "src-mir",
        "us-east-1",
        AKID,
        S3_SECRET,
    )
    .unwrap();

    // Day 10: everything is copied, the repository bundled.
    let c10 = ctx(10);
    run(&c10, &job(&["acme/site"])).await.expect("day 10");
    let first = mirror_keys(&dest).await;
    assert_eq!(first.len(), 3, "{first:?}");
    assert!(first[0].starts_with("mirror/img/a.png@"));
    let man = manifest(&dest, "2026-12-10").await;
    let mir = man.exports.iter().find(|e| e.kind == "s3-mirror").unwrap();
    assert_eq!(mir.bytes, 12);
    for doc in &mir.documents {
        let copy = dest.get(&doc.object).await.unwrap().unwrap();
        let orig = src.get(&doc.path).await.unwrap().unwrap();
        assert_eq!(copy, orig);
    }
    let bundle_key = format!("github/acme/site/2026-12-10-{}.bundle", &head[..12]);
    let gh = man.exports.iter().find(|e| e.kind == "github").unwrap();
    assert_eq!(gh.documents[0].object, bundle_key);
    let bundle = dest.get(&bundle_key).await.unwrap().unwrap();
    std::fs::write(d.join("got.bundle"), &bundle).unwrap();
    sh(
        d,
        "git clone -q got.bundle restored && cd restored && git bundle verify -q ../got.bundle",
    );
    assert_eq!(sh(&d.join("restored"), "cat f"), "hi");
    assert_eq!(sh(&d.join("restored"), "git rev-parse HEAD"), head);
    let refs = sh(d, "git bundle list-heads got.bundle");
    assert!(refs.contains("refs/heads/feature"), "{refs}");
    for k in ["s3-mirror", "github"] {
        assert_eq!(
            source_metric(&c10, "backup_r2_source_success", k),
            Some(1.0),
            "{k}"
        );
    }

    // The day's manifest lost (an interrupted run): the re-run reads HEAD and the
    // mirror listing and uploads nothing but the manifest.
    dest.delete("daily/2026-12-10/manifest.json").await.unwrap();
    run(&c10, &job(&["acme/site"])).await.expect("day 10 again");
    assert_eq!(
        read_textfile(&c10, "backup.prom").value("backup_r2_objects_uploaded", &[]),
        Some(0.0)
    );
    assert_eq!(mirror_keys(&dest).await, first);

    // Day 11: one object changed, one deleted at the source: one object moves, the
    // deleted one's copy stays.
    src.delete("img/b.png").await.unwrap();
    src.put_once("img/b.png", b"BBBBBBB".to_vec().into())
        .await
        .unwrap();
    src.delete("img/c.png").await.unwrap();
    let c11 = ctx(11);
    run(&c11, &job(&["acme/site"])).await.expect("day 11");
    let second = mirror_keys(&dest).await;
    let new: Vec<&String> = second.iter().filter(|k| !first.contains(k)).collect();
    assert_eq!(new.len(), 1, "{second:?}");
    assert!(new[0].starts_with("mirror/img/b.png@"));
    assert!(first.iter().all(|k| second.contains(k)), "nothing deleted");
    // One mirrored object plus the day's new bundle.
    assert_eq!(
        read_textfile(&c11, "backup.prom").value("backup_r2_objects_uploaded", &[]),
        Some(2.0)
    );

    // Day 12: a missing repository fails the bundles alone.
    let c12 = ctx(12);
    let err = run(&c12, &job(&["acme/site", "acme/missing"]))
        .await
        .expect_err("a missing repository");
    assert!(err.to_string().contains("acme/missing"), "{err}");
    assert_eq!(
        source_metric(&c12, "backup_r2_source_success", "github"),
        Some(0.0)
    );
    assert_eq!(
        source_metric(&c12, "backup_r2_source_success", "s3-mirror"),
        Some(1.0)
    );

    // No credential anywhere.
    let log = String::from_utf8_lossy(&logs().lock().unwrap()).to_string();
    let text = std::fs::read_to_string(d.join("textfiles/backup.prom")).unwrap();
    for o in dest.list("").await.unwrap() {
        let raw = dest.get(&o.key).await.unwrap().unwrap();
        for c in [TBI_KEY, GH_TOKEN, S3_SECRET] {
            assert!(
                !String::from_utf8_lossy(&raw).contains(c),
                "{c} in {}",
                o.key
            );
        }
    }
    for c in [TBI_KEY, GH_TOKEN, S3_SECRET] {
        assert!(
            !log.contains(c) && !text.contains(c) && !err.to_string().contains(c),
            "{c}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_age_recipient_documents_mirror_copies_and_bundles_are_encrypted() {
    let p = peers("src-age").await;
    let http = reqwest::Client::new();
    assert!(http
        .put(format!("{}/tbi-age", p.moto.url))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let src = S3::new(http, &p.moto.url, "tbi-age", "us-east-1", "AKIDTBI", "x").unwrap();
    src.put_once("img/a.png", b"plain image bytes".to_vec().into())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(d, "mkdir -p gh/acme && git init -q --bare gh/acme/site.git && git init -q work && cd work && echo hi > f && git add f && git -c user.name=t -c user.email=t@e commit -q -m one && git push -q ../gh/acme/site.git HEAD:refs/heads/main && git --git-dir=../gh/acme/site.git symbolic-ref HEAD refs/heads/main");
    let identity = age::x25519::Identity::generate();
    let mut job = job(&p, "src-age", 20);
    job.age_recipient = Some(identity.to_public().to_string());
    let mut v = serde_json::to_value(&job).unwrap();
    v["sources"]["s3Mirror"] = json!({"endpoint": p.moto.url, "bucket": "tbi-age"});
    v["sources"]["github"] =
        json!({"repos": ["acme/site"], "urlBase": format!("file://{}/gh", d.display())});
    let job: BackupJob = serde_json::from_value(v).unwrap();
    let ctx = ctx_with(
        d,
        14,
        &p,
        &[
            ("BACKUP_AWS_ACCESS_KEY_ID", "AKIDTBI"),
            ("BACKUP_AWS_SECRET_ACCESS_KEY", "x"),
        ],
    );
    run(&ctx, &job).await.expect("an encrypted run");
    let s3 = bucket(&p, "src-age");
    let m = manifest(&s3, "2026-12-14").await;
    assert!(m.encrypted);
    assert_eq!(m.exports.len(), 5);
    for e in &m.exports {
        for doc in &e.documents {
            let raw = s3.get(&doc.object).await.unwrap().unwrap();
            assert!(
                raw.starts_with(b"age-encryption.org/v1"),
                "{} ({}) is not encrypted",
                doc.object,
                e.kind
            );
            let plain = age::decrypt(&identity, &raw).unwrap();
            if e.kind == "s3-mirror" {
                assert_eq!(plain, b"plain image bytes");
            }
            if e.kind == "auth0" && doc.path == "clients.json" {
                let v: Value =
                    serde_json::from_slice(&zstd::decode_all(&plain[..]).unwrap()).unwrap();
                assert_eq!(v.as_array().unwrap().len(), 102);
            }
        }
    }
}

/// A desired-state directory holding `job` as the backup Job and the env file with
/// every credential it names, for `obsctl backup list`.
fn desired_state(root: &std::path::Path, p: &Peers, job: &BackupJob) -> std::path::PathBuf {
    let dir = root.join("ds");
    std::fs::create_dir_all(&dir).unwrap();
    let env = root.join("backup.env");
    let auth0 = p.auth0.base();
    let lines: String = [
        ("R2_ACCESS_KEY_ID", AKID),
        ("R2_SECRET_ACCESS_KEY", S3_SECRET),
        ("CF_BACKUP_API_TOKEN", CF_TOKEN),
        ("CF_ACCOUNT_ID", CF_ACCOUNT),
        ("STRIPE_BACKUP_KEY", STRIPE_KEY),
        ("AUTH0_DOMAIN", auth0.as_str()),
        ("AUTH0_BACKUP_CLIENT_ID", AUTH0_ID),
        ("AUTH0_BACKUP_CLIENT_SECRET", AUTH0_SECRET),
    ]
    .iter()
    .map(|(k, v)| format!("{k}={v}\n"))
    .collect();
    std::fs::write(&env, lines).unwrap();
    std::fs::set_permissions(&env, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let api = "obs.tlsstress.art/v1alpha1";
    let stack = json!({"apiVersion": api, "kind": "Stack", "metadata": {"name": "test"},
        "spec": {"project": format!("obsdt-{}-srclist", std::process::id()),
                 "stateDir": root.join("state").to_string_lossy(),
                 "envFile": env.to_string_lossy(),
                 "textfileDir": root.join("textfile").to_string_lossy()}});
    std::fs::write(dir.join("stack.yaml"), stack.to_string()).unwrap();
    let j = json!({"apiVersion": api, "kind": "Job", "metadata": {"name": "backup"},
        "spec": {"schedule": "30 3 * * *", "backup": serde_json::to_value(job).unwrap()}});
    std::fs::write(dir.join("job.yaml"), j.to_string()).unwrap();
    dir
}

fn obsctl(args: &[&str]) -> (i32, String, String) {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .args(args)
        .env_remove("OBSD_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A day where Stripe failed is complete but partial; a same-day re-run with Stripe
/// back does not turn it into a whole day (nothing is rewritten) and says so again;
/// `obsctl backup list` shows the exports (kind, name, bytes, documents, truncated),
/// the failed source and `partial`, as table and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_day_and_its_same_day_rerun_are_listed_as_partial_with_exports() {
    let p = peers("src-list").await;
    let dir = tempfile::tempdir().unwrap();
    let job = job(&p, "src-list", 1);
    let ctx = ctx_at(dir.path(), 11, &p);
    p.stripe.broken.store(true, Ordering::SeqCst);
    let err = run(&ctx, &job).await.expect_err("stripe fails");
    assert!(matches!(err, JobError::Partial(_)), "{err}");
    p.stripe.broken.store(false, Ordering::SeqCst);
    let err = run(&ctx, &job)
        .await
        .expect_err("the re-run reports the day's failure again");
    assert!(err.to_string().contains("stripe"), "{err}");
    assert_eq!(
        read_textfile(&ctx, "backup.prom").value("backup_r2_objects_uploaded", &[]),
        Some(0.0),
        "the re-run uploads nothing"
    );

    let ds = desired_state(dir.path(), &p, &job);
    let ds = ds.to_string_lossy().into_owned();
    let (code, out, err) = obsctl(&["backup", "list", "--desired-state", &ds, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_secret_free("backup list -o json", &out);
    let v: Value = serde_json::from_str(&out).unwrap();
    let day = &v.as_array().unwrap()[0];
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(day["date"], "2026-12-11");
    assert_eq!(day["complete"], true);
    assert_eq!(day["partial"], true);
    assert_eq!(day["failed"][0]["kind"], "stripe");
    assert_eq!(day["failed"][0]["name"], "stripe");
    assert!(!day["failed"][0]["error"].as_str().unwrap().is_empty());
    let m = manifest(&bucket(&p, "src-list"), "2026-12-11").await;
    let exports = day["exports"].as_array().unwrap();
    let kinds: Vec<&str> = exports
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["cloudflare", "auth0"]);
    for (e, want) in exports.iter().zip(&m.exports) {
        assert_eq!(e["name"], want.name.as_str());
        assert_eq!(e["bytes"], want.bytes);
        assert!(e["bytes"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(e["documents"], want.documents.len());
        assert!(e["documents"].as_u64().unwrap() > 0, "{e}");
        assert_eq!(e["truncated"], json!([]));
        assert_eq!(e["sha256"].as_str().unwrap().len(), 64);
    }
    let (code, out, err) = obsctl(&["backup", "list", "--desired-state", &ds]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("cloudflare") && l.starts_with("2026-12-11")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("stripe") && l.contains("FAILED (the day is partial)")),
        "{out}"
    );

    // Into a closed pipe (`obsctl backup list | head -0`): no panic, its own exit code.
    for args in [
        vec!["backup", "list", "--desired-state", &ds],
        vec!["backup", "list", "--desired-state", &ds, "-o", "json"],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two descriptors we own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: closing the read end we own; writes now fail with EPIPE.
        unsafe { libc::close(fds[0]) };
        // SAFETY: the write end is ours and handed over exactly once.
        let stdout =
            unsafe { <std::process::Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_obsctl"))
            .args(&args)
            .env_remove("OBSD_STATE_DIR")
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {stderr}");
    }

    // A capped list shows as truncated.
    let ctx = ctx_at(dir.path(), 12, &p);
    run(&ctx, &job)
        .await
        .expect("a capped export still succeeds");
    let (code, out, err) = obsctl(&["backup", "list", "--desired-state", &ds, "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["date"], "2026-12-12", "newest first");
    assert_eq!(v[0]["partial"], false);
    let st = v[0]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "stripe")
        .unwrap();
    assert_eq!(st["truncated"], json!(["products: more than 1 pages"]));
}
