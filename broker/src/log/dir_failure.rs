//! A failed data directory, as Kafka's log-directory failure channel records one.
//!
//! The first I/O error of a write under the directory (an append, a roll, a flush, a
//! truncation, a checkpoint) marks it failed. From then on the logs attached to it refuse
//! every write: a write that failed halfway leaves a log whose state in memory no longer
//! matches its files, and appending after it would put records behind a gap. The broker
//! watches `failed()` and stops without a clean shutdown, as Kafka halts when its last log
//! directory fails, so that the partitions it leads elect new leaders from their ISR and the
//! next start recovers the logs from their files.

use std::sync::Arc;

use tokio::sync::watch;

use super::error::LogError;

#[derive(Clone)]
pub struct LogDirFailure {
    reason: Arc<watch::Sender<Option<String>>>,
}

impl Default for LogDirFailure {
    fn default() -> Self {
        Self { reason: Arc::new(watch::Sender::new(None)) }
    }
}

impl std::fmt::Debug for LogDirFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogDirFailure").field("reason", &*self.reason.borrow()).finish()
    }
}

impl LogDirFailure {
    /// Mark the directory failed if `error`, from a write under it, is an I/O error (a batch
    /// refused by validation is the producer's fault, not the disk's). The first failure is
    /// the one kept.
    pub fn record(&self, error: &LogError) {
        let LogError::Io { path, source: error } = error else { return };
        self.reason.send_if_modified(|reason| {
            if reason.is_some() {
                return false;
            }
            // Logged before the watchers wake, so the cause comes first in the broker's log.
            tracing::error!(path = %path.display(), %error, "a write to the data directory failed; its logs refuse writes from now on");
            *reason = Some(format!("{}: {error}", path.display()));
            true
        });
    }

    /// Why the directory failed, once it has.
    pub fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    pub fn has_failed(&self) -> bool {
        self.reason.borrow().is_some()
    }

    /// Resolves with the reason once the directory has failed.
    pub async fn failed(&self) -> String {
        let mut rx = self.reason.subscribe();
        let reason = rx.wait_for(Option::is_some).await.expect("the sender lives in self");
        reason.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_is_kept_and_wakes_the_watcher() {
        let failure = LogDirFailure::default();
        assert!(!failure.has_failed());
        let watcher = tokio::spawn({
            let failure = failure.clone();
            async move { failure.failed().await }
        });
        tokio::task::yield_now().await;
        assert!(!watcher.is_finished());
        failure.record(&LogError::CorruptRecord("a bad batch".into()));
        assert!(!failure.has_failed(), "only I/O errors fail the directory");
        failure.record(&LogError::io("/data/t-0/00000000000000000000.log", std::io::Error::from_raw_os_error(28)));
        failure.record(&LogError::io("/data/other", std::io::Error::from_raw_os_error(5)));
        let reason = tokio::time::timeout(std::time::Duration::from_secs(5), watcher).await.unwrap().unwrap();
        assert!(reason.starts_with("/data/t-0/00000000000000000000.log: "), "{reason}");
        assert!(reason.contains("No space left on device"), "{reason}");
        assert_eq!(failure.reason().as_deref(), Some(reason.as_str()));
        // A watcher that starts after the failure returns at once.
        assert_eq!(failure.failed().await, reason);
    }
}
