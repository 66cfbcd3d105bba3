//! Fuzzes the whole load path: YAML reader → interpolation → typed documents →
//! cross-resource validation. `load_dir` must return `Ok` or located errors for any
//! input; a panic, a hang or runaway memory is a bug.
//!
//! The input is split on NUL bytes into up to four files of one desired-state
//! directory (NUL cannot occur in a text file the loader accepts, so the split costs
//! the fuzzer no expressiveness):
//!
//! 1. `a.yaml`
//! 2. `b.yaml`
//! 3. `config/c.txt` — a config file the documents may mount (`source: config/c.txt`)
//! 4. `secrets.env` — an env file (mode 0600) for `envFile: secrets.env`

#![no_main]

use libfuzzer_sys::fuzz_target;
use obsd::desired::load::{load_dir, LoadErrors, LoadOptions};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0);
    let a = parts.next().unwrap_or_default();
    let b = parts.next();
    let config = parts.next();
    let env = parts.next();

    // tmpfs when there is one: a directory per input is cheap there.
    let tmp = if std::path::Path::new("/dev/shm").is_dir() {
        tempfile::Builder::new()
            .prefix("obsd-fuzz")
            .tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("temp dir");
    let dir = tmp.path();
    std::fs::write(dir.join("a.yaml"), a).unwrap();
    if let Some(b) = b {
        std::fs::write(dir.join("b.yaml"), b).unwrap();
    }
    if let Some(c) = config {
        std::fs::create_dir(dir.join("config")).unwrap();
        std::fs::write(dir.join("config/c.txt"), c).unwrap();
    }
    if let Some(e) = env {
        let path = dir.join("secrets.env");
        std::fs::write(&path, e).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    let opts = LoadOptions {
        // A fixed environment: results must not depend on the fuzzing machine.
        process_env: Some(BTreeMap::from([("OBSD_FUZZ".to_string(), "1".to_string())])),
        ..Default::default()
    };
    match load_dir(dir, &opts) {
        Ok(state) => {
            // Exercise what callers do with a loaded state.
            for svc in state.services.values() {
                let _ = state.service_networks(&svc.spec);
            }
            let _ = obsd::desired::validate::topo_order(&state);
        }
        Err(LoadErrors(diags)) => {
            assert!(
                diags.iter().any(|d| d.is_error()),
                "Err without an error: {diags:?}"
            );
            for d in &diags {
                // Rendering must not panic either (it is what users see).
                let _ = d.to_string();
            }
        }
    }
});
