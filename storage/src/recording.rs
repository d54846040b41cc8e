//! Where recording files live: [`RecordingStore`], with [`LocalRecordingStore`] (a directory under
//! `VOXANNE_DATA_DIR`) as the one-box implementation.
//!
//! The recorder in `media` writes WAV through `impl Write`, so a call always records to a local *staging*
//! file; when the call ends, [`RecordingStore::put`] moves it to its final place and returns a `location`
//! string plus checksum for the [`RecordingRecord`](crate::RecordingRecord). Callers only ever hold
//! locations, so an S3-compatible store (via `object_store`, for multi-node deployments) can implement the
//! same trait with `s3://bucket/key` locations, upload in `put` and stream in `open`, without touching
//! them. The trait is async (boxed futures, so it can be used as `Arc<dyn RecordingStore>`) because object
//! storage is.

use std::fmt;
use std::future::Future;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncRead;

use crate::{CallSid, OrgId, StoreError};

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A boxed reader over a stored recording.
pub type RecordingReader = Box<dyn AsyncRead + Send + Unpin>;

/// What [`RecordingStore::put`] stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecording {
    /// Opaque to callers; store it in [`RecordingRecord::location`](crate::RecordingRecord::location).
    pub location: String,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    pub bytes: u64,
}

/// Storage for recording files. See the module docs.
pub trait RecordingStore: Send + Sync + fmt::Debug {
    /// The local file the recorder writes this call's recording to while the call lasts (parent directories
    /// are created). Fails for a call sid that is not safe in a file name.
    fn staging_path(&self, org: OrgId, sid: &CallSid) -> Result<PathBuf, StoreError>;

    /// Moves the finished staging file to permanent storage and checksums it. Idempotent: calling it again
    /// after it succeeded (the staging file is gone) returns the same result. Never replaces a stored
    /// recording: if the call already has one, the new file is kept under a distinct location (and the
    /// first stays the call's recording, as the recordings table keeps the first row too).
    fn put<'a>(
        &'a self,
        org: OrgId,
        sid: &'a CallSid,
    ) -> BoxFuture<'a, Result<StoredRecording, StoreError>>;

    /// Whether a recording of this call has been stored ([`RecordingStore::put`] succeeded for it).
    /// Call setup refuses a media stream for a call that already has one, so a replayed stream can
    /// neither record over it nor start a second call under its CallSid, even after a restart.
    fn exists<'a>(
        &'a self,
        org: OrgId,
        sid: &'a CallSid,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Opens a stored recording for reading.
    fn open<'a>(&'a self, location: &'a str) -> BoxFuture<'a, Result<RecordingReader, StoreError>>;

    /// The local file behind `location`, if this store keeps files locally (lets the API serve it directly).
    fn local_path(&self, location: &str) -> Option<PathBuf>;
}

/// Recordings as files under `root` (normally `VOXANNE_DATA_DIR/recordings`):
/// `<root>/<org>/<CallSid>.wav`, staged as `<root>/.staging/<org>-<CallSid>.wav` on the same filesystem so
/// `put` is a rename (both layouts are stable: crash recovery finds staged files by them, see
/// [`LocalRecordingStore::list_staged`]). Locations look like `local:<org>/<CallSid>.wav`, relative to
/// `root`, so the data directory can move.
#[derive(Clone, Debug)]
pub struct LocalRecordingStore {
    pub root: PathBuf,
}

const LOCAL_SCHEME: &str = "local:";

impl LocalRecordingStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `data_dir/recordings`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self::new(data_dir.join("recordings"))
    }

    fn relative_key(org: OrgId, sid: &CallSid) -> Result<String, StoreError> {
        let ok = !sid.0.is_empty()
            && sid.0.len() <= 64
            && sid
                .0
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(StoreError::InvalidInput("call sid"));
        }
        Ok(format!("{org}/{sid}.wav"))
    }

    /// Recordings still in staging: calls that never reached `put` (the process stopped mid-call). Files
    /// whose names do not parse are left out (and left alone).
    pub fn list_staged(&self) -> Result<Vec<(OrgId, CallSid, PathBuf)>, StoreError> {
        let dir = self.root.join(".staging");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut staged = Vec::new();
        for entry in entries {
            let path = entry?.path();
            let Some(stem) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wav"))
            else {
                continue;
            };
            // `<uuid (36 chars)>-<CallSid>`
            let (Some(org), Some(sid)) = (stem.get(..36), stem.get(37..)) else {
                continue;
            };
            let (Ok(org), sid) = (org.parse::<uuid::Uuid>(), CallSid::from(sid)) else {
                continue;
            };
            if stem.as_bytes()[36] == b'-' && Self::relative_key(OrgId(org), &sid).is_ok() {
                staged.push((OrgId(org), sid, path));
            }
        }
        staged.sort_by(|a, b| a.2.cmp(&b.2));
        Ok(staged)
    }

    fn final_path(&self, org: OrgId, sid: &CallSid) -> Result<PathBuf, StoreError> {
        Ok(self.root.join(Self::relative_key(org, sid)?))
    }
}

impl RecordingStore for LocalRecordingStore {
    fn staging_path(&self, org: OrgId, sid: &CallSid) -> Result<PathBuf, StoreError> {
        Self::relative_key(org, sid)?;
        let dir = self.root.join(".staging");
        std::fs::create_dir_all(&dir)?;
        Ok(dir.join(format!("{org}-{sid}.wav")))
    }

    fn put<'a>(
        &'a self,
        org: OrgId,
        sid: &'a CallSid,
    ) -> BoxFuture<'a, Result<StoredRecording, StoreError>> {
        Box::pin(async move {
            let staging = self.staging_path(org, sid)?;
            let dest = self.final_path(org, sid)?;
            let key = Self::relative_key(org, sid)?;
            // File I/O and hashing off the async threads.
            let (key, sha256, bytes) = tokio::task::spawn_blocking(
                move || -> Result<(String, String, u64), StoreError> {
                    if !staging.exists() {
                        let (sha256, bytes) = sha256_file(&dest)?;
                        return Ok((key, sha256, bytes));
                    }
                    let f = std::fs::File::open(&staging)?;
                    // Durable before it becomes visible under its final name.
                    f.sync_all()?;
                    let parent = dest.parent().map(Path::to_path_buf);
                    if let Some(parent) = &parent {
                        std::fs::create_dir_all(parent)?;
                    }
                    let (key, stored_at) = link_without_overwriting(&staging, &dest, &key)?;
                    std::fs::remove_file(&staging)?;
                    if let Some(parent) = &parent {
                        // The new name survives a power cut too.
                        std::fs::File::open(parent)?.sync_all()?;
                    }
                    let (sha256, bytes) = sha256_file(&stored_at)?;
                    Ok((key, sha256, bytes))
                },
            )
            .await
            .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
            Ok(StoredRecording {
                location: format!("{LOCAL_SCHEME}{key}"),
                sha256,
                bytes,
            })
        })
    }

    fn exists<'a>(
        &'a self,
        org: OrgId,
        sid: &'a CallSid,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let path = self.final_path(org, sid)?;
            Ok(tokio::fs::try_exists(path).await?)
        })
    }

    fn open<'a>(&'a self, location: &'a str) -> BoxFuture<'a, Result<RecordingReader, StoreError>> {
        Box::pin(async move {
            let path = self
                .local_path(location)
                .ok_or(StoreError::InvalidInput("recording location"))?;
            let file = tokio::fs::File::open(path).await?;
            Ok(Box::new(file) as RecordingReader)
        })
    }

    fn local_path(&self, location: &str) -> Option<PathBuf> {
        let rel = Path::new(location.strip_prefix(LOCAL_SCHEME)?);
        // Locations come from our own database, but never let one name a file outside the root.
        if rel.components().all(|c| matches!(c, Component::Normal(_))) {
            Some(self.root.join(rel))
        } else {
            None
        }
    }
}

/// Most recordings kept for one call besides its first (`<CallSid>.2.wav` …): a bound, so a
/// directory full of them ends in an error (the file stays in staging) rather than a long loop.
/// Call setup refuses a second stream for a call, so even one duplicate means something went
/// wrong (a restart that forgot ended streams *and* lost the first recording, say).
const MAX_RECORDINGS_PER_CALL: u32 = 100;

/// Gives `staging` its permanent name without ever replacing a stored recording: `dest` if it is
/// free, else the first free `<CallSid>.<n>.wav` beside it (logged at warn). A hard link fails when
/// the name is taken, so this is atomic where "check, then rename" is not. Returns the stored
/// file's key and path; the caller removes `staging`.
fn link_without_overwriting(
    staging: &Path,
    dest: &Path,
    key: &str,
) -> Result<(String, PathBuf), StoreError> {
    let stem = key.strip_suffix(".wav").unwrap_or(key);
    for n in 1..=MAX_RECORDINGS_PER_CALL + 1 {
        let (key, path) = if n == 1 {
            (key.to_string(), dest.to_path_buf())
        } else {
            let key = format!("{stem}.{n}.wav");
            let path = dest.with_file_name(Path::new(&key).file_name().unwrap_or_default());
            (key, path)
        };
        match std::fs::hard_link(staging, &path) {
            Ok(()) => {
                if n > 1 {
                    tracing::warn!(location = %key, "a call already had a stored recording; this one is kept beside it");
                }
                return Ok((key, path));
            }
            // A crash between linking and removing the staging file: this is our own file.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if same_file(staging, &path)? {
                    return Ok((key, path));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::InvalidInput("recordings per call (too many)"))
}

#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> Result<bool, StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let (a, b) = (std::fs::metadata(a)?, std::fs::metadata(b)?);
    Ok(a.dev() == b.dev() && a.ino() == b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> Result<bool, StoreError> {
    Ok(false)
}

/// Hex SHA-256 and length of a file.
pub fn sha256_file(path: &Path) -> Result<(String, u64), StoreError> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    let digest = hasher.finalize();
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((hex, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn put_moves_the_staged_file_checksums_it_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalRecordingStore::in_data_dir(dir.path());
        let org = OrgId::new();
        let sid = CallSid::from("CA0123456789abcdef0123456789abcdef");
        let staging = store.staging_path(org, &sid).unwrap();
        std::fs::write(&staging, b"abc").unwrap();

        let stored = store.put(org, &sid).await.unwrap();
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            stored.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(stored.bytes, 3);
        assert!(!staging.exists());
        let path = store.local_path(&stored.location).unwrap();
        assert_eq!(
            path,
            dir.path()
                .join("recordings")
                .join(org.to_string())
                .join(format!("{sid}.wav"))
        );

        let other = CallSid::from("CAffff");
        std::fs::write(store.staging_path(org, &other).unwrap(), b"x").unwrap();
        std::fs::write(dir.path().join("recordings/.staging/notes.txt"), b"x").unwrap();
        let staged = store.list_staged().unwrap();
        assert_eq!(staged.len(), 1);
        assert_eq!((staged[0].0, &staged[0].1), (org, &other));

        let again = store.put(org, &sid).await.unwrap();
        assert_eq!(again, stored);

        let mut bytes = Vec::new();
        store
            .open(&stored.location)
            .await
            .unwrap()
            .read_to_end(&mut bytes)
            .await
            .unwrap();
        assert_eq!(bytes, b"abc");
    }

    #[tokio::test]
    async fn a_stored_recording_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalRecordingStore::in_data_dir(dir.path());
        let org = OrgId::new();
        let sid = CallSid::from("CA0123456789abcdef0123456789abcdef");
        assert!(!store.exists(org, &sid).await.unwrap());
        std::fs::write(store.staging_path(org, &sid).unwrap(), b"first").unwrap();
        let first = store.put(org, &sid).await.unwrap();
        assert!(store.exists(org, &sid).await.unwrap());

        // A second recording for the same call (a replayed stream, a recovered staging file).
        std::fs::write(store.staging_path(org, &sid).unwrap(), b"second").unwrap();
        let second = store.put(org, &sid).await.unwrap();
        assert_ne!(second.location, first.location);
        let read = |loc: &str| std::fs::read(store.local_path(loc).unwrap()).unwrap();
        assert_eq!(read(&first.location), b"first");
        assert_eq!(read(&second.location), b"second");
        // And a third does not take the second's name.
        std::fs::write(store.staging_path(org, &sid).unwrap(), b"third").unwrap();
        let third = store.put(org, &sid).await.unwrap();
        assert_eq!(read(&first.location), b"first");
        assert_eq!(read(&second.location), b"second");
        assert_eq!(read(&third.location), b"third");
        // Nothing left in staging, and the call's recording is still the first.
        assert!(store.list_staged().unwrap().is_empty());
        assert_eq!(store.put(org, &sid).await.unwrap(), first);
    }

    #[test]
    fn unsafe_sids_and_locations_are_refused() {
        let store = LocalRecordingStore::new("/data/recordings");
        let org = OrgId::new();
        assert!(
            store
                .staging_path(org, &CallSid::from("../../etc/passwd"))
                .is_err()
        );
        assert!(store.staging_path(org, &CallSid::from("")).is_err());
        assert_eq!(store.local_path("local:../x.wav"), None);
        assert_eq!(store.local_path("local:/etc/passwd"), None);
        assert_eq!(store.local_path("s3://bucket/x.wav"), None);
    }
}
