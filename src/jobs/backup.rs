//! backup-r2 (LLD section 2): declared in the model, not implemented yet.
//!
//! Running it fails with a clear error instead of pretending: a backup that reports
//! success without copying anything is worse than none.

use super::{JobContext, JobError};
use crate::desired::model::job::BackupJob;
use tokio_util::sync::CancellationToken;

pub async fn run(
    _ctx: &JobContext,
    _job: &BackupJob,
    _cancel: &CancellationToken,
) -> Result<(), JobError> {
    Err(JobError::BackupNotImplemented)
}
