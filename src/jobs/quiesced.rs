//! The containers a job of this process has paused or stopped on purpose right now (a
//! backup's quiesce, for the duration of one volume's read), by container ID.
//!
//! The daemon's reconcile pass reads it ([`crate::reconcile::exec::observe`] →
//! `Observed::quiesced`) so that it does not unpause or start such a container in the
//! middle of the read: a paused or stopped owned container is otherwise `stopped`
//! drift, repaired at once. Process-wide on purpose: after a crash the set is empty
//! again, and the next pass repairs what the crash left paused or stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// Holds per container ID (two overlapping runs may quiesce the same container).
static HELD: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn held() -> std::sync::MutexGuard<'static, BTreeMap<String, usize>> {
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// Marks `id` as quiesced on purpose (before it is paused or stopped).
pub fn hold(id: &str) {
    *held().entry(id.to_string()).or_insert(0) += 1;
}

/// Ends one hold of `id` (after it was unpaused or started again, or when that failed).
pub fn release(id: &str) {
    let mut h = held();
    if let Some(n) = h.get_mut(id) {
        *n -= 1;
        if *n == 0 {
            h.remove(id);
        }
    }
}

/// The IDs held now.
pub fn snapshot() -> BTreeSet<String> {
    held().keys().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_are_counted_per_container() {
        hold("q-test-a");
        hold("q-test-a");
        hold("q-test-b");
        release("q-test-a");
        assert!(snapshot().contains("q-test-a"), "one hold left");
        release("q-test-a");
        release("q-test-b");
        release("q-test-b"); // an extra release is harmless
        let s = snapshot();
        assert!(!s.contains("q-test-a") && !s.contains("q-test-b"), "{s:?}");
    }
}
