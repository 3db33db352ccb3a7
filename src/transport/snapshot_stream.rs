//! Snapshots on the wire: a snapshot directory's files streamed in chunks (sending), and
//! staged from chunks into a directory of their own (receiving).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::client::{connect, identify};
use super::{GrpcTransportConfig, Resolve};
use crate::StoreId;
use crate::proto::transportpb::store_transport_client::StoreTransportClient;
use crate::proto::transportpb::{RaftMessage, SnapshotChunk};
use crate::storage::snapshot::SnapshotBounds;
use crate::store::TransportError;

/// Why a snapshot send failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum SendError {
    /// No connection to the store.
    #[error("{0}")]
    Unreachable(String),
    /// The store answered the call with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(tonic::Status),
    /// The snapshot's own files could not be read.
    #[error("reading the snapshot's files: {0}")]
    Files(std::io::Error),
}

impl SendError {
    /// Whether another attempt may succeed: the store was unreachable or busy, or the
    /// connection broke.
    pub(super) fn is_retryable(&self) -> bool {
        match self {
            SendError::Unreachable(_) => true,
            SendError::Status(s) => matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Cancelled
                    | tonic::Code::Unknown
                    | tonic::Code::DeadlineExceeded
            ),
            SendError::Files(_) => false,
        }
    }

    pub(super) fn into_transport_error(self, to: StoreId) -> TransportError {
        match self {
            SendError::Unreachable(_) => TransportError::Unreachable(to),
            other => TransportError::SnapshotRefused {
                store: to,
                reason: other.to_string(),
            },
        }
    }
}

/// Paces snapshot bytes to a rate shared by every send of the store: each chunk takes
/// the next free slot of its length.
pub(super) struct RateLimiter {
    bytes_per_sec: u64,
    next_free: Mutex<Instant>,
}

impl RateLimiter {
    pub(super) fn new(bytes_per_sec: u64) -> Self {
        RateLimiter {
            bytes_per_sec: bytes_per_sec.max(1),
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Blocks until `bytes` may go.
    fn take(&self, bytes: usize) {
        std::thread::sleep(self.reserve(bytes, Instant::now()));
    }

    /// Reserves the next free slot for `bytes`; how long after `now` it starts.
    fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        let mut next = self.next_free.lock();
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
        start - now
    }
}

/// Sends the snapshot in `dir` to `to`: the files in name order, chunk by chunk, the
/// first chunk carrying `message`. Returns the bytes sent.
pub(super) async fn send(
    config: &GrpcTransportConfig,
    resolver: &dyn Resolve,
    to: StoreId,
    message: RaftMessage,
    dir: &Path,
    slots: &Semaphore,
    rate: Option<Arc<RateLimiter>>,
) -> Result<u64, SendError> {
    let _slot = slots
        .acquire()
        .await
        .map_err(|_| SendError::Unreachable("the transport is closing".into()))?;
    let dir_name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            SendError::Files(std::io::Error::other(format!(
                "snapshot directory {} has no usable name",
                dir.display()
            )))
        })?
        .to_string();
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(SendError::Files)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(SendError::Files)?;
    files.retain(|p| p.is_file());
    files.sort();
    let channel = connect(to, resolver, config)
        .await
        .map_err(SendError::Unreachable)?;
    let (tx, rx) = mpsc::channel(2);
    let chunk_bytes = config.snapshot_chunk_bytes.max(1);
    let reader = tokio::task::spawn_blocking(move || {
        read_chunks(&files, message, dir_name, chunk_bytes, rate, &tx)
    });
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    identify(&mut request, config).map_err(SendError::Status)?;
    let mut client = StoreTransportClient::new(channel)
        .max_encoding_message_size(config.max_message_bytes)
        .max_decoding_message_size(config.max_message_bytes);
    let answer = client.snapshot(request).await;
    let read = reader
        .await
        .map_err(|e| SendError::Files(std::io::Error::other(e.to_string())))?;
    // A file that could not be read ends the stream without its `done` chunk, which the
    // receiver refuses; the read error says more than that refusal.
    let bytes = read.map_err(SendError::Files)?;
    answer.map_err(SendError::Status)?;
    Ok(bytes)
}

/// Reads the files into chunks for the stream. Stops early, without error, if the call
/// has ended (the receiver is gone): the call's answer says why.
fn read_chunks(
    files: &[PathBuf],
    message: RaftMessage,
    dir_name: String,
    chunk_bytes: usize,
    rate: Option<Arc<RateLimiter>>,
    tx: &mpsc::Sender<SnapshotChunk>,
) -> std::io::Result<u64> {
    let mut header = Some((message, dir_name));
    let mut sent = 0u64;
    let mut buf = vec![0u8; chunk_bytes];
    for path in files {
        let file_name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| std::io::Error::other(format!("unusable file name {}", path.display())))?
            .to_string();
        let mut file = File::open(path)?;
        let mut first_of_file = true;
        loop {
            let n = read_full(&mut file, &mut buf)?;
            // An empty file still sends one chunk, so it exists on the other side.
            if n == 0 && !first_of_file {
                break;
            }
            first_of_file = false;
            if let Some(rate) = &rate {
                rate.take(n);
            }
            let (message, dir_name) = header.take().unzip();
            let chunk = SnapshotChunk {
                message,
                dir_name: dir_name.unwrap_or_default(),
                file_name: file_name.clone(),
                data: Bytes::copy_from_slice(&buf[..n]),
                done: false,
            };
            if tx.blocking_send(chunk).is_err() {
                return Ok(sent);
            }
            sent += n as u64;
        }
    }
    let done = SnapshotChunk {
        done: true,
        ..Default::default()
    };
    // A receiver gone by now has answered the call: its answer says why.
    let _ = tx.blocking_send(done);
    Ok(sent)
}

/// Fills `buf` as far as the file allows: reading stops at the file's end, or once the
/// buffer is full (a read into its empty rest returns 0).
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    loop {
        match file.read(&mut buf[filled..])? {
            0 => return Ok(filled),
            n => filled += n,
        }
    }
}

/// Why a received chunk stream was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum StageError {
    /// The stream broke a rule of the protocol (a bad name, a file sent twice).
    #[error("{0}")]
    Invalid(String),
    /// Staging the files failed here.
    #[error("staging the snapshot: {0}")]
    Io(#[from] std::io::Error),
    /// The snapshot announces more bytes than the disk has free.
    #[error("the snapshot's {bytes} bytes do not fit: {free} bytes free")]
    NoRoom {
        /// What the snapshot may stage, as announced.
        bytes: u64,
        /// Free on the disk holding the staging directory.
        free: u64,
    },
}

/// Whether a snapshot call `elapsed` old that has received `received` bytes falls under
/// `least_rate` bytes per second, counted after a `grace` (the call's first idle timeout,
/// so a slow start is not held against it). A `least_rate` of 0 checks nothing.
pub(super) fn under_least_rate(
    elapsed: Duration,
    received: u64,
    grace: Duration,
    least_rate: u64,
) -> bool {
    let Some(paced) = elapsed.checked_sub(grace) else {
        return false;
    };
    (received as f64) < least_rate as f64 * paced.as_secs_f64()
}

/// Refuses a snapshot that announces more bytes than the disk holding `staging` has free,
/// before a byte of it is staged: it could not be taken whole, and staging it would fill
/// the disk first. (No bounds: the receiver imposes none, nothing to check.)
fn check_room(staging: &Path, bounds: Option<SnapshotBounds>) -> Result<(), StageError> {
    let Some(bounds) = bounds else {
        return Ok(());
    };
    let free = fs2::available_space(staging)?;
    if bounds.bytes > free {
        return Err(StageError::NoRoom {
            bytes: bounds.bytes,
            free,
        });
    }
    Ok(())
}

/// A name the sender may give a file or directory: one plain path component.
pub(super) fn check_name(name: &str) -> Result<&str, StageError> {
    let plain = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(name)
    } else {
        Err(StageError::Invalid(format!(
            "{name:?} is not a plain file name"
        )))
    }
}

/// The files of one received snapshot, written as their chunks arrive, within the bounds
/// its message announced.
pub(super) struct StagedFiles {
    dir: PathBuf,
    bounds: Option<SnapshotBounds>,
    current: Option<(String, File)>,
    done: std::collections::HashSet<String>,
    bytes: u64,
}

impl StagedFiles {
    /// Stages into `dir` (created; it must not exist yet) at most `bounds`, which must fit
    /// in the free space of the disk holding it.
    pub(super) fn create(dir: PathBuf, bounds: Option<SnapshotBounds>) -> Result<Self, StageError> {
        let parent = dir.parent().unwrap_or(&dir);
        fs::create_dir_all(parent)?;
        check_room(parent, bounds)?;
        fs::create_dir(&dir)?;
        Ok(StagedFiles {
            dir,
            bounds,
            current: None,
            done: Default::default(),
            bytes: 0,
        })
    }

    /// Appends a chunk to its file: the current one, or a new one after it.
    pub(super) fn take(&mut self, file_name: &str, data: &[u8]) -> Result<(), StageError> {
        let same = self
            .current
            .as_ref()
            .is_some_and(|(name, _)| name == file_name);
        // The files and bytes staged once this chunk is.
        let files = self.done.len() as u64 + u64::from(self.current.is_some()) + u64::from(!same);
        let bytes = self.bytes + data.len() as u64;
        if let Some(bounds) = self.bounds
            && (files > bounds.files || bytes > bounds.bytes)
        {
            return Err(StageError::Invalid(format!(
                "more than the {} files and {} bytes the snapshot announced",
                bounds.files, bounds.bytes
            )));
        }
        if !same {
            let name = check_name(file_name)?;
            if self.done.contains(name) {
                return Err(StageError::Invalid(format!("file {name:?} sent twice")));
            }
            if let Some((finished, _)) = self.current.take() {
                self.done.insert(finished);
            }
            let file = File::create_new(self.dir.join(name))?;
            self.current = Some((name.to_string(), file));
        }
        if let Some((_, file)) = &mut self.current {
            file.write_all(data)?;
        }
        self.bytes += data.len() as u64;
        Ok(())
    }

    /// The directory, complete; the bytes staged.
    pub(super) fn finish(self) -> Result<(PathBuf, u64), StageError> {
        if self.current.is_none() {
            return Err(StageError::Invalid("a snapshot with no files".into()));
        }
        Ok((self.dir, self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The least rate counts from the end of the grace: within it nothing is too slow;
    /// after it, the bytes must reach the rate times the time past it (exactly enough is
    /// enough); a rate of 0 checks nothing.
    #[test]
    fn a_call_is_under_the_least_rate_only_after_its_grace() {
        let grace = Duration::from_secs(2);
        let secs = Duration::from_secs;
        assert!(!under_least_rate(secs(1), 0, grace, 1000));
        assert!(!under_least_rate(secs(2), 0, grace, 1000));
        assert!(under_least_rate(secs(3), 999, grace, 1000));
        assert!(!under_least_rate(secs(3), 1000, grace, 1000));
        assert!(under_least_rate(secs(12), 9_999, grace, 1000));
        assert!(!under_least_rate(secs(12), 10_000, grace, 1000));
        assert!(!under_least_rate(secs(1000), 0, grace, 0));
    }

    #[test]
    fn the_rate_limiter_spaces_chunks_by_their_length() {
        let limiter = RateLimiter::new(1000);
        let now = Instant::now() + Duration::from_secs(1);
        assert_eq!(
            limiter.reserve(500, now),
            Duration::ZERO,
            "the first goes at once"
        );
        // The next waits for the first's half second.
        assert_eq!(limiter.reserve(500, now), Duration::from_millis(500));
        assert_eq!(limiter.reserve(1, now), Duration::from_secs(1));
        // Once its slots have passed, the next goes at once again.
        let later = now + Duration::from_secs(5);
        assert_eq!(limiter.reserve(1, later), Duration::ZERO);
    }

    #[test]
    fn files_go_in_paced_chunks_the_first_carrying_the_message_and_a_done_last() {
        let dir = tempfile::tempdir().unwrap();
        let contents: [(&str, &[u8]); 4] = [
            ("a", b"0123456789"),
            ("b", b""),
            ("c", b"xyz"),
            ("d", b"ABCDEFGH"),
        ];
        let mut files = Vec::new();
        for (name, data) in contents {
            fs::write(dir.path().join(name), data).unwrap();
            files.push(dir.path().join(name));
        }
        let message = RaftMessage {
            region_id: 7,
            ..Default::default()
        };
        let (tx, mut rx) = mpsc::channel(100);
        // 100 bytes a second: the last chunk waits for the 17 bytes before it.
        let rate = Arc::new(RateLimiter::new(100));
        let started = Instant::now();
        let sent = read_chunks(&files, message.clone(), "snap-1".into(), 4, Some(rate), &tx);
        assert!(started.elapsed() >= Duration::from_millis(160));
        assert_eq!(sent.unwrap(), 21);
        let mut chunks = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            chunks.push(chunk);
        }
        let first = chunks[0].clone();
        assert_eq!(
            (first.message, first.dir_name.as_str()),
            (Some(message), "snap-1")
        );
        assert!(
            chunks[1..]
                .iter()
                .all(|c| c.message.is_none() && c.dir_name.is_empty())
        );
        let parts: Vec<(&str, &[u8], bool)> = chunks
            .iter()
            .map(|c| (c.file_name.as_str(), &c.data[..], c.done))
            .collect();
        let expected: [(&str, &[u8], bool); 8] = [
            ("a", b"0123", false),
            ("a", b"4567", false),
            ("a", b"89", false),
            // An empty file still has its chunk; a full last chunk needs no empty one.
            ("b", b"", false),
            ("c", b"xyz", false),
            ("d", b"ABCD", false),
            ("d", b"EFGH", false),
            ("", b"", true),
        ];
        assert_eq!(parts, expected);

        // The call ended (its receiver gone): reading stops, without an error.
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        assert_eq!(
            read_chunks(&files, RaftMessage::default(), "s".into(), 4, None, &tx).unwrap(),
            0
        );
    }

    #[test]
    fn only_plain_names_are_taken() {
        for bad in ["", ".", "..", "a/b", "../x", "/abs", "a\\b", "nul\0"] {
            assert!(check_name(bad).is_err(), "{bad:?} taken");
        }
        let long = "x".repeat(256);
        assert!(check_name(&long).is_err());
        for good in ["meta", "chunk-000001", "snap-7-42", "..x", &"y".repeat(255)] {
            assert_eq!(check_name(good).unwrap(), good);
        }
    }

    #[test]
    fn staged_files_refuse_a_file_sent_twice_or_no_file() {
        let root = tempfile::tempdir().unwrap();
        let mut staged = StagedFiles::create(root.path().join("s1"), None).unwrap();
        staged.take("a", b"12").unwrap();
        staged.take("a", b"34").unwrap();
        staged.take("b", b"").unwrap();
        assert!(matches!(
            staged.take("a", b"5"),
            Err(StageError::Invalid(_))
        ));
        let (dir, bytes) = staged.finish().unwrap();
        assert_eq!(bytes, 4);
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"1234");
        assert_eq!(fs::read(dir.join("b")).unwrap(), b"");

        let empty = StagedFiles::create(root.path().join("s2"), None).unwrap();
        assert!(matches!(empty.finish(), Err(StageError::Invalid(_))));
        // A directory that exists already is not staged into.
        assert!(StagedFiles::create(root.path().join("s1"), None).is_err());
    }

    /// Staging stops at the announced bounds: a file past the count, a byte past the
    /// total, whether in a new file or the current one; up to them everything is taken.
    #[test]
    fn staged_files_stop_at_the_announced_files_and_bytes() {
        let root = tempfile::tempdir().unwrap();
        let bounds = Some(SnapshotBounds { files: 2, bytes: 6 });
        let staging = |name: &str| StagedFiles::create(root.path().join(name), bounds).unwrap();
        let too_much = |r: Result<(), StageError>| matches!(r, Err(StageError::Invalid(_)));

        let mut staged = staging("whole");
        staged.take("a", b"12").unwrap();
        staged.take("a", b"34").unwrap();
        staged.take("b", b"56").unwrap();
        assert!(too_much(staged.take("c", b"")), "a third file");
        assert_eq!(staged.finish().unwrap().1, 6);

        let mut staged = staging("long-file");
        staged.take("a", b"123456").unwrap();
        assert!(
            too_much(staged.take("a", b"7")),
            "a byte more in the same file"
        );

        let mut staged = staging("long-second");
        staged.take("a", b"1234").unwrap();
        assert!(
            too_much(staged.take("b", b"567")),
            "a byte more in a new file"
        );

        let mut nothing =
            StagedFiles::create(root.path().join("nothing"), Some(SnapshotBounds::NOTHING))
                .unwrap();
        assert!(too_much(nothing.take("a", b"")), "nothing announced");
    }
}
