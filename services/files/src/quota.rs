//! The disk quota as uploads meet it: how much room an upload has, and the refusal (recorded as
//! a `files.quota.exceeded` event) when it does not fit.

use crate::FilesService;
use crate::error::{FilesError, Result};

impl FilesService {
    /// How many more bytes an upload may bring (`None`: no quota); `replaced` is what the upload
    /// frees (an overwritten content that is not kept as a version). Refuses, and records the
    /// refusal, when the announced size does not fit.
    pub(crate) async fn room(&self, instance: &str, announced: i64, replaced: u64) -> Result<Option<u64>> {
        let usage = self.drive(instance).usage().await?;
        if usage.quota == 0 {
            return Ok(None);
        }
        let room = (usage.quota + replaced).saturating_sub(usage.used());
        if announced >= 0 && announced as u64 > room {
            return Err(self.exceeded(instance, usage, announced as u64).await);
        }
        Ok(Some(room))
    }

    /// The refusal of an upload over quota, recorded as `files.quota.exceeded`.
    pub(crate) async fn exceeded(&self, instance: &str, usage: crate::projection::Usage, attempted: u64) -> FilesError {
        let event = cocon_proto::events::v1::QuotaExceeded {
            quota: usage.quota,
            used: usage.used(),
            attempted,
        };
        let _writer = self.stripe(instance).lock().await;
        if let Err(err) = self
            .commit_entries(instance, vec![crate::commit::Entry::QuotaExceeded(event)])
            .await
        {
            tracing::warn!(error = %err, "cannot record a refused upload");
        }
        FilesError::QuotaExceeded(format!(
            "this upload does not fit: {} of the {} bytes allowed are used; delete files or versions, or ask for a larger quota",
            usage.used(),
            usage.quota
        ))
    }
}
