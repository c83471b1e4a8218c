//! Durable commits without a sync on the storage thread: group commit with the WAL's sync
//! pipelined behind the next batch.
//!
//! With `synchronous = full`, SQLite syncs the WAL inside `COMMIT`, and the storage thread, the
//! process's only writer, waits for that sync (about a millisecond on a virtual disk) before it
//! can begin the next batch: with two cores, a third of the time went idle. Here the write
//! connection commits with SQLite's `synchronous = NORMAL` (the WAL written, not synced) and
//! hands the batch's answers to a sync thread, which syncs the WAL file and only then sends
//! them; meanwhile the storage thread runs the next batch. One sync covers every commit made
//! before it began, so the sync thread takes everything waiting each time it wakes.
//!
//! What a client is told never depends on a commit a power loss could undo:
//!
//! - A write is answered once a sync that began after its commit succeeded.
//! - A lookup on the storage thread, which sees every commit, durable or not, is answered after
//!   the sync covering the commits made before it ran (at once when there are none).
//! - A read on a read connection waits likewise for the commits made before it ended.
//!
//! Another process reading the file (a `sessiond` command run beside the server) may see a
//! commit a moment before it is durable, as with `NORMAL` itself.
//!
//! SQLite in WAL mode with `NORMAL` stays consistent through a power loss (frames carry
//! checksums, and it syncs the WAL before every checkpoint and its header whenever the WAL
//! starts over), so the sync here adds durability, not consistency. The WAL file, named after
//! the path SQLite reports for the database (symbolic links resolved), is synced through a
//! descriptor of its own: a sync of any descriptor flushes the file. SQLite holds no
//! lock on the WAL file, so opening it here disturbs none of its locks (closing a descriptor of
//! the database file would drop them all). The descriptor is opened at the first sync, and its
//! directory synced once then, as SQLite does for a WAL it creates and syncs. Before each sync
//! the file at the WAL's path must still be that one: the write connection keeps writing to the
//! file it opened for as long as it lives, so a WAL unlinked or replaced under the running store
//! (by hand, or by another program) would lose its commits at the next start, and the sync fails
//! instead.
//!
//! That check asks for the file's inode number alone. On file systems with fine-grained
//! timestamps (Linux 6.13 and later: ext4, XFS, Btrfs, tmpfs), a file whose change time was
//! read since its last write gets a new one at its next write, and `fdatasync` then writes the
//! inode as well: a third request to the disk, between the data and the flush, on every sync. A
//! plain `stat` of the path before each sync did that.
//!
//! A sync that fails answers everything it covered with [`StoreError::Unavailable`] naming an
//! I/O error: those commits are visible but their durability is unknown, as a client whose
//! connection dropped after sending a write would know it. The failure is final for the life of
//! the process. Once `fsync` has reported an error, Linux may have dropped the unwritten pages
//! and cleared the error, so a later sync that succeeds proves nothing about the frames before
//! it, and a commit appended after a lost frame does not survive a crash (SQLite's recovery
//! stops at the first frame whose checksum fails). So from then on no sync is attempted, no
//! batch is committed ([`Durability::lost`]), and every answer that could reveal a commit not
//! known durable is the failure; the health check reports the store unable to write. A restart
//! recovers: SQLite rebuilds the WAL index from the frames that reached the disk.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use sessiond_core::store::{CannotWrite, StoreError, WriteBlock};

/// An answer held until the commits made before it are durable; called with the sync's
/// failure, if it failed.
pub(crate) type Deferred = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// The sync thread and what it shares with the storage thread and the read connections.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the storage thread and the readers see of the syncer; cheap to clone.
#[derive(Clone)]
pub(crate) struct Durability(Arc<Shared>);

struct Shared {
    state: Mutex<State>,
    /// Wakes the sync thread: answers are waiting, or it is to stop.
    work: Condvar,
    /// Wakes readers waiting for a sync to end.
    synced: Condvar,
}

#[derive(Default)]
struct State {
    /// Commits made by the storage thread.
    committed: u64,
    /// Commits known durable: every one up to this number.
    synced: u64,
    /// Answers waiting for the next sync.
    waiting: Vec<Deferred>,
    /// Set by the first sync that fails, and never cleared: no commit after it is durable.
    lost: Option<CannotWrite>,
    stop: bool,
}

impl State {
    fn lost(&self) -> Option<StoreError> {
        self.lost
            .clone()
            .map(|cannot| StoreError::Unavailable(Box::new(cannot)))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing holding the lock can panic; the counters stay valid whatever happened.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Syncer {
    /// Starts the sync thread for the WAL of the database at `database`; `failed` hears of
    /// each sync that fails.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub(crate) fn start(
        database: &Path,
        failed: impl Fn(CannotWrite) + Send + 'static,
    ) -> Result<Self, StoreError> {
        let mut wal = Wal::new(database);
        Self::spawn(move || wal.sync(), failed)
    }

    /// The sync thread with `sync` as what makes the commits so far durable.
    fn spawn(
        mut sync: impl FnMut() -> std::io::Result<()> + Send + 'static,
        failed: impl Fn(CannotWrite) + Send + 'static,
    ) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            synced: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("sqlite-sync".into())
            .spawn(move || run(&thread_shared, &mut sync, &failed))
            .map_err(|error| StoreError::Backend(Box::new(error)))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn durability(&self) -> Durability {
        Durability(Arc::clone(&self.shared))
    }

    /// Sends every answer still waiting (after a last sync) and stops the thread.
    pub(crate) fn stop(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.shared.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the sqlite sync thread panicked");
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

impl Durability {
    /// The storage thread committed a batch: `answers` go out once it is durable.
    pub(crate) fn committed(&self, answers: impl IntoIterator<Item = Deferred>) {
        let mut state = self.0.lock();
        state.committed += 1;
        state.waiting.extend(answers);
        drop(state);
        self.0.work.notify_one();
    }

    /// Sends `answer`, which may reveal any commit made so far, once those commits are
    /// durable: at once when they already are.
    pub(crate) fn after_commits(&self, answer: Deferred) {
        let mut state = self.0.lock();
        if state.synced >= state.committed {
            drop(state);
            answer(None);
            return;
        }
        if let Some(lost) = state.lost() {
            drop(state);
            answer(Some(&lost));
            return;
        }
        state.waiting.push(answer);
        drop(state);
        self.0.work.notify_one();
    }

    /// Blocks until every commit made so far is durable (a read connection's answer may reveal
    /// any of them).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the sync meant to cover them failed.
    pub(crate) fn wait(&self) -> Result<(), StoreError> {
        let mut state = self.0.lock();
        let target = state.committed;
        while state.lost.is_none() && state.synced < target {
            state = self
                .0
                .synced
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // Short of `target`, the wait ended because a sync failed.
        if state.synced >= target {
            Ok(())
        } else {
            state.lost().map_or(Ok(()), Err)
        }
    }

    /// The failure every write is to be refused with, once a sync of the WAL has failed: the
    /// storage thread then commits nothing more (see the module documentation).
    pub(crate) fn lost(&self) -> Option<StoreError> {
        self.0.lock().lost()
    }

    /// The commits made so far.
    #[cfg(test)]
    pub(crate) fn commits(&self) -> u64 {
        self.0.lock().committed
    }

    /// Whether every commit made so far is durable.
    #[cfg(test)]
    pub(crate) fn settled(&self) -> bool {
        let state = self.0.lock();
        state.synced >= state.committed && state.waiting.is_empty()
    }
}

/// The sync thread's loop: take every waiting answer, sync, answer; until stopped with
/// nothing waiting.
fn run(
    shared: &Shared,
    sync: &mut dyn FnMut() -> std::io::Result<()>,
    failed: &dyn Fn(CannotWrite),
) {
    loop {
        let mut state = shared.lock();
        while state.waiting.is_empty() && !state.stop {
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.waiting.is_empty() {
            return;
        }
        let answers = std::mem::take(&mut state.waiting);
        let target = state.committed;
        if let Some(lost) = state.lost() {
            // No sync can vouch for these commits any more.
            drop(state);
            for answer in answers {
                answer(Some(&lost));
            }
            continue;
        }
        drop(state);

        let outcome = sync();
        let mut state = shared.lock();
        let cannot = match outcome {
            Ok(()) => {
                state.synced = state.synced.max(target);
                None
            }
            Err(error) => {
                let cannot = CannotWrite {
                    reason: WriteBlock::IoError,
                    detail: format!("the WAL could not be synced ({error}); restart to recover"),
                };
                state.lost = Some(cannot.clone());
                Some((error, cannot))
            }
        };
        drop(state);
        shared.synced.notify_all();
        let failure = cannot.map(|(error, cannot)| {
            tracing::error!(
                error = %error,
                "could not sync the sqlite WAL: the commits since the last sync may not survive \
                 a power loss, and writes are refused until sessiond restarts"
            );
            failed(cannot.clone());
            StoreError::Unavailable(Box::new(cannot))
        });
        for answer in answers {
            answer(failure.as_ref());
        }
    }
}

/// The directory that holds the name of the file at `path`: its parent, or the working
/// directory for a bare name. Syncing it makes a newly created name durable.
pub(crate) fn directory_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// The WAL file, opened when first synced (see the module documentation).
struct Wal {
    path: PathBuf,
    open: Option<(File, FileId)>,
}

/// Which file a path names: its device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    device: (u32, u32),
    inode: u64,
}

impl FileId {
    /// The file at `path`.
    fn of_path(path: &Path) -> std::io::Result<Self> {
        use rustix::fs::{AtFlags, CWD, StatxFlags, statx};
        Self::asked(statx(CWD, path, AtFlags::empty(), StatxFlags::INO), || {
            std::fs::metadata(path)
        })
    }

    /// The file `file` is open on.
    fn of_file(file: &File) -> std::io::Result<Self> {
        use rustix::fs::{AtFlags, StatxFlags, statx};
        Self::asked(
            statx(file, "", AtFlags::EMPTY_PATH, StatxFlags::INO),
            || file.metadata(),
        )
    }

    /// The identity `asked` (a `statx` for the inode number alone) found. No time is read, so
    /// the file's next write keeps the timestamp granularity that spares `fdatasync` an inode
    /// write (see the module documentation). On a kernel without `statx` (before 4.11),
    /// `stat` answers instead.
    fn asked(
        asked: rustix::io::Result<rustix::fs::Statx>,
        stat: impl FnOnce() -> std::io::Result<std::fs::Metadata>,
    ) -> std::io::Result<Self> {
        match asked {
            Ok(found) => Ok(Self {
                device: (found.stx_dev_major, found.stx_dev_minor),
                inode: found.stx_ino,
            }),
            Err(rustix::io::Errno::NOSYS) => {
                let metadata = stat()?;
                let device = metadata.dev();
                Ok(Self {
                    device: (rustix::fs::major(device), rustix::fs::minor(device)),
                    inode: metadata.ino(),
                })
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl Wal {
    fn new(database: &Path) -> Self {
        let mut path = database.as_os_str().to_owned();
        path.push("-wal");
        Self {
            path: PathBuf::from(path),
            open: None,
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let (file, opened) = match &self.open {
            Some(open) => open,
            None => {
                let file = File::open(&self.path)?;
                let opened = FileId::of_file(&file)?;
                // The file's name must survive a power loss as much as its content.
                File::open(directory_of(&self.path))?.sync_all()?;
                self.open.insert((file, opened))
            }
        };
        if FileId::of_path(&self.path)? != *opened {
            return Err(std::io::Error::other(format!(
                "{} is no longer the WAL file the database writes to",
                self.path.display()
            )));
        }
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A syncer whose syncs each wait for the test's go-ahead, and the channel that gives it
    /// (`Ok` to succeed, `Err` to fail); the third value counts the syncs begun.
    fn held_syncer() -> (
        Syncer,
        mpsc::Sender<std::io::Result<()>>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (go, gate) = mpsc::channel::<std::io::Result<()>>();
        let begun = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&begun);
        let syncer = Syncer::spawn(
            move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gate.recv().unwrap_or(Ok(()))
            },
            |_| {},
        )
        .unwrap();
        (syncer, go, begun)
    }

    /// An answer that reports on `sent` whether it went out and with which failure.
    fn answer(sent: &mpsc::Sender<Option<String>>) -> Deferred {
        let sent = sent.clone();
        Box::new(move |failure| {
            let _ = sent.send(failure.map(|failure| format!("{failure:?}")));
        })
    }

    fn begun_syncs(begun: &std::sync::atomic::AtomicUsize, at_least: usize) {
        for _ in 0..500 {
            if begun.load(std::sync::atomic::Ordering::SeqCst) >= at_least {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("no sync began");
    }

    #[test]
    fn a_commit_is_answered_only_after_a_sync_that_began_after_it() {
        let (syncer, go, begun) = held_syncer();
        let durability = syncer.durability();
        let (sent, answers) = mpsc::channel();
        durability.committed([answer(&sent)]);
        begun_syncs(&begun, 1);
        // A second commit while the first sync runs waits for a sync of its own.
        durability.committed([answer(&sent)]);
        assert!(answers.recv_timeout(Duration::from_millis(50)).is_err());
        go.send(Ok(())).unwrap();
        assert_eq!(answers.recv_timeout(Duration::from_secs(5)).unwrap(), None);
        begun_syncs(&begun, 2);
        assert!(
            answers.recv_timeout(Duration::from_millis(50)).is_err(),
            "answered before the sync that covers it"
        );
        assert!(!durability.settled());
        go.send(Ok(())).unwrap();
        assert_eq!(answers.recv_timeout(Duration::from_secs(5)).unwrap(), None);
        assert!(durability.settled());
        syncer.stop();
    }

    #[test]
    fn a_lookup_waits_for_the_commits_before_it_and_only_those() {
        let (syncer, go, begun) = held_syncer();
        let durability = syncer.durability();
        let (sent, answers) = mpsc::channel();
        // Nothing committed: at once, and no sync.
        durability.after_commits(answer(&sent));
        assert_eq!(answers.try_recv().unwrap(), None);
        durability.committed([]);
        durability.after_commits(answer(&sent));
        begun_syncs(&begun, 1);
        assert!(answers.recv_timeout(Duration::from_millis(50)).is_err());
        go.send(Ok(())).unwrap();
        assert_eq!(answers.recv_timeout(Duration::from_secs(5)).unwrap(), None);
        syncer.stop();
        assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn a_read_waits_for_the_sync_and_hears_of_its_failure() {
        let (syncer, go, begun) = held_syncer();
        let durability = syncer.durability();
        assert!(durability.wait().is_ok(), "nothing to wait for");
        let (sent, answers) = mpsc::channel();
        durability.committed([answer(&sent)]);
        begun_syncs(&begun, 1);
        let reader = {
            let durability = durability.clone();
            std::thread::spawn(move || durability.wait())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "a read answered before the sync");
        go.send(Err(std::io::Error::other("device gone"))).unwrap();
        let failure = answers.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(failure.is_some_and(|failure| failure.contains("device gone")));
        let read = reader.join().unwrap();
        assert!(
            read.as_ref()
                .err()
                .and_then(StoreError::cannot_write)
                .map(|c| c.reason)
                == Some(WriteBlock::IoError),
            "{read:?}"
        );
        syncer.stop();
    }

    /// After a failed sync no later sync can vouch for a commit: nothing more is synced, every
    /// later commit, lookup and read hears of the failure at once, and writes are refused.
    #[test]
    fn a_failed_sync_is_final() {
        let (syncer, go, begun) = held_syncer();
        let durability = syncer.durability();
        let (sent, answers) = mpsc::channel();
        durability.committed([answer(&sent)]);
        go.send(Ok(())).unwrap();
        assert_eq!(answers.recv_timeout(Duration::from_secs(5)).unwrap(), None);
        assert!(durability.lost().is_none());
        durability.committed([answer(&sent)]);
        begun_syncs(&begun, 2);
        go.send(Err(std::io::Error::other("device gone"))).unwrap();
        assert!(
            answers
                .recv_timeout(Duration::from_secs(5))
                .unwrap()
                .is_some()
        );
        let lost = durability.lost().expect("the failure is kept");
        assert_eq!(
            lost.cannot_write().map(|c| c.reason),
            Some(WriteBlock::IoError)
        );
        // A sync would succeed now, but none is attempted.
        go.send(Ok(())).unwrap();
        durability.committed([answer(&sent)]);
        let later = answers.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(later.is_some_and(|failure| failure.contains("device gone")));
        durability.after_commits(answer(&sent));
        assert!(
            answers.try_recv().unwrap().is_some(),
            "a lookup answered at once"
        );
        assert!(durability.wait().is_err());
        syncer.stop();
        assert_eq!(begun.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn stopping_sends_every_answer_still_waiting() {
        let (syncer, go, _begun) = held_syncer();
        let durability = syncer.durability();
        let (sent, answers) = mpsc::channel();
        durability.committed([answer(&sent), answer(&sent)]);
        go.send(Ok(())).unwrap();
        syncer.stop();
        assert_eq!(answers.try_iter().count(), 2);
    }

    #[test]
    fn the_wal_is_synced_only_while_its_path_names_the_file_first_synced() {
        let directory = tempfile::tempdir().unwrap();
        let database = directory.path().join("sessiond.db");
        let wal_path = directory.path().join("sessiond.db-wal");
        let mut wal = Wal::new(&database);
        assert!(wal.sync().is_err(), "no WAL file yet");
        assert!(wal.open.is_none());
        std::fs::write(&wal_path, b"frames").unwrap();
        wal.sync().unwrap();
        wal.sync().unwrap();
        let first = wal.open.as_ref().map(|(_, opened)| opened.inode);
        assert_eq!(first, Some(std::fs::metadata(&wal_path).unwrap().ino()));
        // Replaced by another file (both exist at once, so the inode differs): the database
        // still writes to the first, which no longer has the name a restart opens.
        std::fs::write(directory.path().join("replacement"), b"other frames").unwrap();
        std::fs::rename(directory.path().join("replacement"), &wal_path).unwrap();
        assert!(wal.sync().is_err(), "a replaced WAL");
        // Unlinked.
        std::fs::remove_file(&wal_path).unwrap();
        assert!(wal.sync().is_err(), "an unlinked WAL");
    }
}
