//! [`WriteQueue`]: the write path that keeps the audio path off the database.
//!
//! ```text
//!  call tasks ── submit() ──► bounded channel ──► writer task ──► Store::apply_batch (one transaction)
//!        │  (never awaits)         │ full                 ▲   transient error: back off and retry the batch
//!        │                         ▼                      │   permanent error: retry op by op, park the bad
//!        └──────────────────► spill file (JSON lines) ────┘   one in the rejected file
//!                              bounded; past the bound: dropped + error log
//! ```
//!
//! Ordering: the writer drains the channel before it replays the spill file, and once spilling has started,
//! every later submit goes to the spill file too until the writer has taken the file over ("rotated" it), so
//! writes land in the order they were submitted. (The writes also commute, see [`WriteOp`], so an order
//! upset by a crash cannot change the result.)
//!
//! Durability: an op is in one of: the channel (memory), the spill file, the `.replaying` file being written
//! back, or the database. [`WriteQueue::shutdown`] moves whatever is still in memory to the spill file, and
//! the next [`WriteQueue::spawn`] with the same path replays both files before anything else. Only a process
//! crash loses what was in the channel at that moment (at most [`QueueConfig::capacity`] ops). Every append
//! to the spill file is followed by `fdatasync` before `submit` (or the writer's shutdown) returns: one sync
//! per batch appended (a single op from `submit`, everything left in memory at shutdown), so a spilled op
//! survives a power cut as well as a process crash. The cost: while spilling (the database down or the
//! queue full), each `submit` waits for one disk sync under the spill lock, ~0.1–2 ms on an SSD and up to
//! tens of ms on a busy spinning disk. Submits come a few per turn, never per audio frame, and spilling only
//! happens during an outage, so calls stay smooth; [`QueueStats::spill_syncs`] counts them.
//!
//! Stopping: call [`WriteQueue::shutdown`], then await the writer's `JoinHandle`. Dropping every handle
//! without it also ends the writer, but only once everything is written, waiting for the database as long as
//! that takes.
//!
//! Metrics: [`WriteQueue::stats`] ([`QueueStats`]); `dropped > 0` means call data was lost and is also
//! logged at error level ("WRITE DROPPED"), `db_up` feeds the health endpoint.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{Notify, mpsc, watch};

use crate::{Store, StoreError, WriteOp};

/// Write queue tuning. [`Default`] is what production uses.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Ops held in memory for the writer. 4096: twenty busy calls produce a few ops per second each, so this
    /// is minutes of traffic, and at a few hundred bytes an op ~2 MB of memory. Past it, ops go to the spill
    /// file instead.
    pub capacity: usize,
    /// Most ops per transaction. 256: large enough that one fsync covers a burst (SQLite commit cost
    /// dominates otherwise), small enough that a transaction stays well under a second.
    pub max_batch: usize,
    /// Bound on the spill file. 256 MiB: about a million turns, hours of a full clinic's traffic during an
    /// outage, and still small next to the recordings on the same disk. Past it, ops are dropped, counted and
    /// logged at error level.
    pub spill_max_bytes: u64,
    /// First retry delay after a transient failure; doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest retry delay: 2 s, so data lands within seconds of the database coming back.
    pub retry_max: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 4096,
            max_batch: 256,
            spill_max_bytes: 256 * 1024 * 1024,
            retry_initial: Duration::from_millis(50),
            retry_max: Duration::from_secs(2),
        }
    }
}

/// Counters for metrics and the health endpoint. Counts are since this process started the queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Ops waiting in memory.
    pub queued: u64,
    /// Ops written to the database (including ones replayed from a spill file).
    pub written: u64,
    /// Transaction attempts that failed transiently and were retried.
    pub retried: u64,
    /// Ops appended to the spill file because the queue was full (or at shutdown).
    pub spilled: u64,
    /// Ops lost because the spill file reached its bound (or could not be written). Should always be 0;
    /// anything else is logged at error level.
    pub dropped: u64,
    /// Ops the database refused for good (e.g. a call of another organisation); kept in the rejected file.
    pub rejected: u64,
    /// Of `written`: ops from a spill file left by a previous run.
    pub recovered: u64,
    /// Submitted but not yet written, rejected or dropped.
    pub pending: u64,
    /// Current size of the spill file.
    pub spill_bytes: u64,
    /// Disk syncs of the spill file (one per batch appended, see the module docs).
    pub spill_syncs: u64,
    /// False from the first transient failure until the next successful write.
    pub db_up: bool,
}

/// A cheap, cloneable handle for submitting writes; see the module docs.
#[derive(Clone, Debug)]
pub struct WriteQueue {
    tx: mpsc::Sender<WriteOp>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Store,
    config: QueueConfig,
    /// Identifies this run's lines in the spill file, so replaying them settles this run's submits and not
    /// a previous run's.
    run_id: u64,
    spill_path: PathBuf,
    /// Where the writer moves the spill file while writing it back.
    replay_path: PathBuf,
    /// Ops the database refused for good, kept for a human.
    rejected_path: PathBuf,
    spill: Mutex<SpillFile>,
    /// True while the spill file holds ops; new submits then go there too (ordering).
    spilling: AtomicBool,
    submitted: AtomicU64,
    /// This run's ops that are written, rejected or dropped: what `flush` waits for.
    settled: AtomicU64,
    written: AtomicU64,
    recovered: AtomicU64,
    retried: AtomicU64,
    spilled: AtomicU64,
    spill_syncs: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    db_up: AtomicBool,
    /// The previous run's files have been replayed.
    recovery_done: AtomicBool,
    shutting_down: AtomicBool,
    /// Signals progress to `flush`.
    progress: watch::Sender<()>,
    /// Tells the writer the spill file has ops (the channel may be empty).
    wake: Notify,
    /// Tells the writer to stop.
    stop: Notify,
}

#[derive(Debug, Default)]
struct SpillFile {
    file: Option<File>,
    bytes: u64,
}

#[derive(Serialize)]
struct SpillLineRef<'a> {
    run: u64,
    op: &'a WriteOp,
}

#[derive(Deserialize)]
struct SpillLine {
    run: u64,
    op: WriteOp,
}

/// The writer was told to stop while it still held ops.
struct Stopping;

impl WriteQueue {
    /// Spawns the writer task with [`QueueConfig::default`]. `spill_path` is a JSON-lines file for ops that
    /// could not be queued; one left by a previous run is replayed first.
    pub fn spawn(store: Store, spill_path: PathBuf) -> (WriteQueue, tokio::task::JoinHandle<()>) {
        Self::spawn_with(store, spill_path, QueueConfig::default())
    }

    /// [`WriteQueue::spawn`] with explicit tuning.
    pub fn spawn_with(
        store: Store,
        spill_path: PathBuf,
        config: QueueConfig,
    ) -> (WriteQueue, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.capacity.max(1));
        let leftover = terminate_last_line(&spill_path);
        let shared = Arc::new(Shared {
            store,
            run_id: uuid::Uuid::new_v4().as_u64_pair().0,
            replay_path: with_suffix(&spill_path, ".replaying"),
            rejected_path: with_suffix(&spill_path, ".rejected"),
            spill_path,
            spill: Mutex::new(SpillFile {
                file: None,
                bytes: leftover,
            }),
            // A leftover spill file is older than anything submitted now: keep new ops behind it.
            spilling: AtomicBool::new(leftover > 0),
            config,
            submitted: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            written: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            spill_syncs: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            db_up: AtomicBool::new(true),
            recovery_done: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            progress: watch::channel(()).0,
            wake: Notify::new(),
            stop: Notify::new(),
        });
        if leftover > 0 {
            tracing::warn!(path = %shared.spill_path.display(), bytes = leftover, "replaying spill file from a previous run");
        }
        let writer = Writer {
            shared: shared.clone(),
            rx,
        };
        let handle = tokio::spawn(writer.run());
        (WriteQueue { tx, shared }, handle)
    }

    /// Queues a write. Never blocks on the database and never awaits: a bounded `try_send`; when the channel
    /// is full (the database is slow or down) the op is appended to the spill file instead, a small
    /// synchronous file write. Past the spill bound the op is dropped, counted and logged at error level.
    pub fn submit(&self, op: WriteOp) {
        let shared = &self.shared;
        shared.submitted.fetch_add(1, Ordering::AcqRel);
        if !shared.spilling.load(Ordering::Acquire) {
            if let Err(TrySendError::Full(op) | TrySendError::Closed(op)) = self.tx.try_send(op) {
                self.spill_or_send(op);
            }
        } else {
            self.spill_or_send(op);
        }
    }

    /// Under the spill lock: if the writer has rotated the spill file since we looked, the channel is the
    /// right place again; otherwise append.
    fn spill_or_send(&self, op: WriteOp) {
        let shared = &self.shared;
        let mut spill = shared.lock_spill();
        let op = if shared.spilling.load(Ordering::Acquire) {
            op
        } else {
            match self.tx.try_send(op) {
                Ok(()) => return,
                Err(TrySendError::Full(op) | TrySendError::Closed(op)) => op,
            }
        };
        if !shared.spilling.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                path = %shared.spill_path.display(),
                db_up = shared.db_up.load(Ordering::Relaxed),
                "write queue full: spilling writes to disk until the database catches up"
            );
        }
        shared.append_spill(&mut spill, &op, shared.run_id, false);
        shared.sync_spill(&mut spill);
        drop(spill);
        shared.wake.notify_one();
    }

    pub fn stats(&self) -> QueueStats {
        let s = &self.shared;
        let submitted = s.submitted.load(Ordering::Acquire);
        QueueStats {
            queued: (self.tx.max_capacity() - self.tx.capacity()) as u64,
            written: s.written.load(Ordering::Acquire),
            retried: s.retried.load(Ordering::Acquire),
            spilled: s.spilled.load(Ordering::Acquire),
            dropped: s.dropped.load(Ordering::Acquire),
            rejected: s.rejected.load(Ordering::Acquire),
            recovered: s.recovered.load(Ordering::Acquire),
            pending: submitted.saturating_sub(s.settled.load(Ordering::Acquire)),
            spill_bytes: s.lock_spill().bytes,
            spill_syncs: s.spill_syncs.load(Ordering::Acquire),
            db_up: s.db_up.load(Ordering::Acquire),
        }
    }

    /// Waits until everything submitted so far (and any spill file left by a previous run) is written,
    /// rejected or dropped, or `timeout` passes (`FlushTimeout`).
    pub async fn flush(&self, timeout: Duration) -> Result<(), StoreError> {
        let s = &self.shared;
        let target = s.submitted.load(Ordering::Acquire);
        let mut progress = s.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let settled = s.settled.load(Ordering::Acquire);
            if settled >= target && s.recovery_done.load(Ordering::Acquire) {
                return Ok(());
            }
            let pending = target.saturating_sub(settled);
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(StoreError::FlushTimeout { pending }),
            }
        }
    }

    /// Flushes for up to `timeout`, then stops the writer: whatever is still in memory is appended to the
    /// spill file for the next run, and ops submitted after this go there too. Returns the flush result.
    /// A zero timeout stops at once, without yielding to the writer.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), StoreError> {
        let flushed = if timeout.is_zero() {
            let s = &self.shared;
            let pending = s
                .submitted
                .load(Ordering::Acquire)
                .saturating_sub(s.settled.load(Ordering::Acquire));
            if pending == 0 {
                Ok(())
            } else {
                Err(StoreError::FlushTimeout { pending })
            }
        } else {
            self.flush(timeout).await
        };
        let s = &self.shared;
        {
            let _spill = s.lock_spill();
            s.shutting_down.store(true, Ordering::Release);
            s.spilling.store(true, Ordering::Release);
        }
        s.stop.notify_one();
        if let Err(e) = &flushed {
            tracing::warn!(error = %e, path = %s.spill_path.display(), "write queue stopped before the database caught up; the rest is in the spill file");
        }
        flushed
    }
}

impl Shared {
    fn lock_spill(&self) -> MutexGuard<'_, SpillFile> {
        // A panic while holding the lock leaves the file state usable: recover the guard.
        self.spill.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify_progress(&self) {
        self.progress.send_replace(());
    }

    /// Appends one op. `force` ignores the bound (used at shutdown, where what is left is bounded by the
    /// channel anyway).
    fn append_spill(&self, spill: &mut SpillFile, op: &WriteOp, run: u64, force: bool) {
        let mut line = match serde_json::to_vec(&SpillLineRef { run, op }) {
            Ok(line) => line,
            Err(e) => {
                self.drop_op(op, &format!("not serialisable: {e}"));
                return;
            }
        };
        line.push(b'\n');
        if !force && spill.bytes + line.len() as u64 > self.config.spill_max_bytes {
            self.drop_op(op, "spill file full");
            return;
        }
        let result = match &mut spill.file {
            Some(f) => f.write_all(&line),
            None => OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.spill_path)
                .and_then(|mut f| {
                    let r = f.write_all(&line);
                    spill.file = Some(f);
                    r
                }),
        };
        match result {
            Ok(()) => {
                spill.bytes += line.len() as u64;
                self.spilled.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                spill.file = None;
                self.drop_op(op, &format!("spill file write failed: {e}"));
            }
        }
    }

    /// Makes what was appended durable (`fdatasync`): called once after each batch of appends. A failed
    /// sync is logged; the ops stay in the file (they survive a process crash, maybe not a power cut).
    fn sync_spill(&self, spill: &mut SpillFile) {
        let Some(file) = &spill.file else { return };
        match file.sync_data() {
            Ok(()) => {
                self.spill_syncs.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => {
                tracing::error!(error = %e, path = %self.spill_path.display(), "spill file sync failed; spilled writes may not survive a power cut");
            }
        }
    }

    fn drop_op(&self, op: &WriteOp, why: &str) {
        let n = self.dropped.fetch_add(1, Ordering::AcqRel) + 1;
        self.settled.fetch_add(1, Ordering::AcqRel);
        // Loud, but not one line per op during a long outage.
        if n == 1 || n.is_multiple_of(1000) {
            tracing::error!(
                dropped_total = n,
                kind = op.kind(),
                call_sid = op.call_sid().map(|s| s.as_str()).unwrap_or(""),
                org_id = %op.org(),
                reason = why,
                bound = self.config.spill_max_bytes,
                "WRITE DROPPED: database unavailable and spill file bound reached; call data is being lost"
            );
        }
        self.notify_progress();
    }

    fn reject(&self, op: &WriteOp, this_run: bool, err: &StoreError) {
        self.rejected.fetch_add(1, Ordering::AcqRel);
        if this_run {
            self.settled.fetch_add(1, Ordering::AcqRel);
        }
        tracing::error!(kind = op.kind(), call_sid = op.call_sid().map(|s| s.as_str()).unwrap_or(""), org_id = %op.org(), error = %err, "write rejected by the database; kept in the rejected file");
        let line = serde_json::to_vec(&SpillLineRef {
            run: self.run_id,
            op,
        })
        .map(|mut l| {
            l.push(b'\n');
            l
        });
        let written = line.map_err(std::io::Error::other).and_then(|line| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.rejected_path)?
                .write_all(&line)
        });
        if let Err(e) = written {
            tracing::error!(error = %e, path = %self.rejected_path.display(), "could not keep a rejected write");
        }
        self.notify_progress();
    }

    /// Moves the spill file aside for replay, so new overflow can start a fresh one.
    fn rotate(&self) -> Rotation {
        let mut spill = self.lock_spill();
        if !self.spilling.load(Ordering::Acquire) || self.shutting_down.load(Ordering::Acquire) {
            return Rotation::Nothing;
        }
        spill.file = None;
        let rotation = match std::fs::rename(&self.spill_path, &self.replay_path) {
            Ok(()) => Rotation::Replay,
            // Every append failed (and was counted as dropped): nothing to replay.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Rotation::Nothing,
            Err(e) => {
                // Leave spilling on: the writer tries again after a pause.
                tracing::error!(error = %e, path = %self.spill_path.display(), "cannot rotate the spill file");
                return Rotation::Failed;
            }
        };
        spill.bytes = 0;
        self.spilling.store(false, Ordering::Release);
        rotation
    }
}

enum Rotation {
    Replay,
    Nothing,
    Failed,
}

struct Writer {
    shared: Arc<Shared>,
    rx: mpsc::Receiver<WriteOp>,
}

impl Writer {
    async fn run(mut self) {
        let stopped = self.run_until_stopped().await;
        if stopped.is_err() {
            tracing::info!("write queue stopping");
        }
        // Whatever is still in memory goes to the spill file for the next run.
        self.rx.close();
        let mut spill = self.shared.lock_spill();
        while let Ok(op) = self.rx.try_recv() {
            self.shared
                .append_spill(&mut spill, &op, self.shared.run_id, true);
        }
        self.shared.sync_spill(&mut spill);
        spill.file = None;
    }

    async fn run_until_stopped(&mut self) -> Result<(), Stopping> {
        let shared = self.shared.clone();
        // A previous run may have died while writing back a spill file.
        if tokio::fs::try_exists(&shared.replay_path)
            .await
            .unwrap_or(false)
        {
            self.replay().await?;
        }
        // Then the spill file it left (new submits have been appended behind its ops).
        if shared.spilling.load(Ordering::Acquire) && matches!(shared.rotate(), Rotation::Replay) {
            self.replay().await?;
        }
        shared.recovery_done.store(true, Ordering::Release);
        shared.notify_progress();
        loop {
            if shared.shutting_down.load(Ordering::Acquire) {
                return Err(Stopping);
            }
            let first = match self.rx.try_recv() {
                Ok(op) => op,
                Err(TryRecvError::Empty) => {
                    // The channel holds only ops older than the spill file's, so the spill goes next.
                    if shared.spilling.load(Ordering::Acquire) {
                        match shared.rotate() {
                            Rotation::Replay => self.replay().await?,
                            Rotation::Nothing => {}
                            Rotation::Failed => tokio::time::sleep(shared.config.retry_max).await,
                        }
                        continue;
                    }
                    tokio::select! {
                        op = self.rx.recv() => match op {
                            Some(op) => op,
                            None => continue,
                        },
                        () = shared.wake.notified() => continue,
                        () = shared.stop.notified() => return Err(Stopping),
                    }
                }
                Err(TryRecvError::Disconnected) => {
                    // Every handle is gone: write back what was spilled, then stop.
                    if shared.spilling.load(Ordering::Acquire) {
                        match shared.rotate() {
                            Rotation::Replay => self.replay().await?,
                            Rotation::Nothing | Rotation::Failed => {}
                        }
                    }
                    return Ok(());
                }
            };
            let mut ops = Vec::with_capacity(shared.config.max_batch.min(64));
            ops.push(first);
            while ops.len() < shared.config.max_batch {
                match self.rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            let this_run = vec![true; ops.len()];
            if let Err(stopping) = self.write(&ops, &this_run).await {
                // Not written: keep them for the next run.
                let mut spill = shared.lock_spill();
                for op in &ops {
                    shared.append_spill(&mut spill, op, shared.run_id, true);
                }
                shared.sync_spill(&mut spill);
                return Err(stopping);
            }
        }
    }

    /// Writes back the `.replaying` file in batches, then deletes it. If told to stop halfway, the file stays
    /// and the next run replays it again (writes are idempotent).
    async fn replay(&mut self) -> Result<(), Stopping> {
        let shared = self.shared.clone();
        let path = shared.replay_path.clone();
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot open spill file for replay");
                return Ok(());
            }
        };
        let mut reader = tokio::io::BufReader::new(file);
        let mut line = Vec::new();
        let mut ops = Vec::new();
        let mut this_run = Vec::new();
        let mut replayed = 0u64;
        loop {
            line.clear();
            let n = match reader.read_until(b'\n', &mut line).await {
                Ok(n) => n,
                Err(e) => {
                    // Keep the file for a human rather than delete what could not be read; the next spill
                    // must not be renamed over it.
                    let aside = with_suffix(&path, ".unreadable");
                    tracing::error!(error = %e, path = %path.display(), moved_to = %aside.display(), "spill file read failed");
                    if let Err(e) = tokio::fs::rename(&path, &aside).await {
                        tracing::error!(error = %e, "cannot move the unreadable spill file aside");
                    }
                    return Ok(());
                }
            };
            if n > 0 {
                match serde_json::from_slice::<SpillLine>(line.trim_ascii()) {
                    Ok(l) => {
                        this_run.push(l.run == shared.run_id);
                        ops.push(l.op);
                    }
                    // A line cut short by a crash mid-append: nothing to recover from it.
                    Err(e) if !line.trim_ascii().is_empty() => {
                        tracing::error!(error = %e, path = %path.display(), "unreadable spill line skipped");
                    }
                    Err(_) => {}
                }
            }
            if ops.len() >= shared.config.max_batch || (n == 0 && !ops.is_empty()) {
                self.write(&ops, &this_run).await?;
                replayed += ops.len() as u64;
                ops.clear();
                this_run.clear();
            }
            if n == 0 {
                break;
            }
        }
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::error!(error = %e, path = %path.display(), "cannot remove replayed spill file");
        }
        tracing::info!(ops = replayed, "spill file written back to the database");
        Ok(())
    }

    /// Writes a batch in one transaction, retrying transient failures with backoff until it lands or the
    /// queue is told to stop. A batch the database refuses for good is retried op by op, so one bad op is
    /// rejected and the rest land.
    async fn write(&self, ops: &[WriteOp], this_run: &[bool]) -> Result<(), Stopping> {
        match self.write_with_retry(ops).await? {
            Ok(()) => self.settle(this_run),
            Err(e) if ops.len() == 1 => self.shared.reject(&ops[0], this_run[0], &e),
            Err(_) => {
                for (op, &mine) in ops.iter().zip(this_run) {
                    match self.write_with_retry(std::slice::from_ref(op)).await? {
                        Ok(()) => self.settle(&[mine]),
                        Err(e) => self.shared.reject(op, mine, &e),
                    }
                }
            }
        }
        Ok(())
    }

    fn settle(&self, this_run: &[bool]) {
        let s = &self.shared;
        let mine = this_run.iter().filter(|&&m| m).count() as u64;
        let total = this_run.len() as u64;
        s.written.fetch_add(total, Ordering::AcqRel);
        s.recovered.fetch_add(total - mine, Ordering::AcqRel);
        s.settled.fetch_add(mine, Ordering::AcqRel);
        s.notify_progress();
    }

    async fn write_with_retry(&self, ops: &[WriteOp]) -> Result<Result<(), StoreError>, Stopping> {
        let s = &self.shared;
        let mut delay = s.config.retry_initial;
        loop {
            match s.store.apply_batch(ops).await {
                Ok(()) => {
                    if !s.db_up.swap(true, Ordering::AcqRel) {
                        tracing::info!(
                            backend = s.store.backend(),
                            "database reachable again; writing buffered calls"
                        );
                    }
                    return Ok(Ok(()));
                }
                Err(e) if e.is_transient() => {
                    if s.db_up.swap(false, Ordering::AcqRel) {
                        tracing::error!(backend = s.store.backend(), error = %e, "database unavailable: buffering writes and retrying");
                    } else {
                        tracing::debug!(error = %e, "database still unavailable");
                    }
                    s.retried.fetch_add(1, Ordering::AcqRel);
                    s.notify_progress();
                    if s.shutting_down.load(Ordering::Acquire) {
                        return Err(Stopping);
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = s.stop.notified() => return Err(Stopping),
                    }
                    delay = (delay * 2).min(s.config.retry_max);
                }
                // The database answered, so it is up; the write itself is bad.
                Err(e) => return Ok(Err(e)),
            }
        }
    }
}

/// Size of a spill file left by a previous run, after ending its last line: a crash mid-append leaves a torn
/// line, and the next op appended must not be glued onto it (replay skips the torn line only).
fn terminate_last_line(path: &Path) -> u64 {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let Ok(mut f) = OpenOptions::new().read(true).append(true).open(path) else {
        return 0;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len == 0 {
        return 0;
    }
    let mut last = [0u8; 1];
    let torn = f
        .seek(SeekFrom::End(-1))
        .and_then(|_| f.read_exact(&mut last))
        .is_ok()
        && last[0] != b'\n';
    if torn && f.write_all(b"\n").is_ok() {
        return len + 1;
    }
    len
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CallSid;

    /// A spilled op is synced to disk before `submit` returns, and the next run (after a crash: no
    /// shutdown, the handle simply gone) finds it in the spill file and writes it.
    #[tokio::test]
    async fn a_spilled_op_is_synced_and_written_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(None, dir.path()).await.unwrap();
        let (org, assistant) = store.ensure_default_org().await.unwrap();
        let spill = dir.path().join("writes.spill");
        let (queue, writer) = WriteQueue::spawn(store.clone(), spill.clone());
        // Stop the writer: from now on every submit goes to the spill file.
        queue.shutdown(Duration::ZERO).await.unwrap();
        writer.await.unwrap();
        let sid = CallSid::from("CA0123456789abcdef0123456789abcdef");
        queue.submit(WriteOp::CallStarted {
            org,
            assistant: Some(assistant),
            sid: sid.clone(),
            from: "+15550100001".into(),
            to: "+15550100002".into(),
            direction: "inbound".into(),
            started_at: chrono::Utc::now(),
        });
        let stats = queue.stats();
        assert_eq!((stats.spilled, stats.dropped), (1, 0));
        assert_eq!(stats.spill_syncs, 1, "the append was synced");
        assert!(std::fs::metadata(&spill).unwrap().len() > 0);
        // The crash: nothing else happens to this run's queue.
        drop(queue);

        let (queue, writer) = WriteQueue::spawn(store.clone(), spill.clone());
        queue.flush(Duration::from_secs(10)).await.unwrap();
        assert_eq!(queue.stats().recovered, 1);
        let call = store
            .get_call(org, &sid)
            .await
            .unwrap()
            .expect("call written");
        assert_eq!(call.from, "+15550100001");
        queue.shutdown(Duration::from_secs(5)).await.unwrap();
        writer.await.unwrap();
    }
}
