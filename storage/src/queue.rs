//! stub
use std::path::PathBuf;
use std::time::Duration;

use crate::{Store, StoreError, WriteOp};

#[derive(Clone, Debug)]
pub struct QueueConfig {}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct QueueStats {
    pub queued: u64,
    pub written: u64,
    pub retried: u64,
    pub spilled: u64,
    pub dropped: u64,
    pub db_up: bool,
}

#[derive(Clone, Debug)]
pub struct WriteQueue {}

impl WriteQueue {
    pub fn spawn(store: Store, spill_path: PathBuf) -> (WriteQueue, tokio::task::JoinHandle<()>) {
        let _ = (store, spill_path);
        (WriteQueue {}, tokio::spawn(async {}))
    }
    pub fn submit(&self, op: WriteOp) {
        let _ = op;
    }
    pub fn stats(&self) -> QueueStats {
        QueueStats::default()
    }
    pub async fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        let _ = timeout;
        Ok(())
    }
}
