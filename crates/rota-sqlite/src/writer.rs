//! The one writer thread, with group commit.
//!
//! Every write request is a closure sent over a channel. The thread takes the first request,
//! drains whatever else has queued up meanwhile (typically everything that arrived during
//! the previous commit's fsync), runs each request in its own savepoint inside one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each request. So 100
//! concurrent enqueues cost a handful of fsyncs, and no caller hears "done" before its
//! data is on disk. One request's failure rolls back only its own savepoint.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rota_store::{ErrorKind, JobChange, NoNotifier, Notifier, StoreError};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::park::Parking;
use crate::sql::{db_err, exec_cached, Tx};

/// Who hears committed job changes; shared by the store (which sets it) and the writer.
pub(crate) type SharedNotifier = Arc<RwLock<Arc<dyn Notifier>>>;

/// Most requests folded into one transaction.
const MAX_GROUP: usize = 1024;
/// Requests that may wait for the writer before senders are held back.
const QUEUE_DEPTH: usize = 8192;

/// Called after the commit with its outcome; sends the request's answer.
type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;
/// A write request: runs inside the transaction (or, if the transaction could not start,
/// is given that error instead) and returns how to answer, with the job changes it made.
type Work = Box<dyn FnOnce(Result<&Connection, &StoreError>) -> (Reply, Vec<JobChange>) + Send>;

/// Counters of the writer's work, for tests and metrics.
#[derive(Debug, Default)]
pub struct WriterCounters {
    transactions: AtomicU64,
    requests: AtomicU64,
    checkpoints: AtomicU64,
    parked_claims: AtomicU64,
}

/// A snapshot of [`WriterCounters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or attempted).
    pub transactions: u64,
    /// Write requests served.
    pub requests: u64,
    /// WAL checkpoints run between groups.
    pub checkpoints: u64,
    /// Parked claims run inside the transaction that made their jobs ready.
    pub parked_claims: u64,
}

/// The handle through which the store sends writes.
pub struct Writer {
    sender: Option<mpsc::Sender<Work>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<WriterCounters>,
    notifier: SharedNotifier,
    health: Arc<WriteHealth>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("counters", &self.counters)
            .finish()
    }
}

impl Writer {
    /// Starts the writer thread on `conn`; it serves `parking`'s claims after each group.
    pub(crate) fn start(conn: Connection, path: &Path, parking: Arc<Parking>) -> Self {
        let file = DatabaseFile::of(path);
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let counters = Arc::new(WriterCounters::default());
        let notifier: SharedNotifier = Arc::new(RwLock::new(Arc::new(NoNotifier)));
        let (thread_counters, thread_notifier) = (counters.clone(), notifier.clone());
        let thread = std::thread::Builder::new()
            .name("rota-sqlite-writer".into())
            .spawn(move || {
                run(
                    conn,
                    receiver,
                    &thread_counters,
                    &thread_notifier,
                    &parking,
                    &file,
                )
            })
            .expect("spawning the writer thread");
        Self {
            sender: Some(sender),
            thread: Some(thread),
            counters,
            notifier,
            health: Arc::new(WriteHealth::of(path)),
        }
    }

    /// Makes `notifier` hear the job changes of every later commit.
    pub(crate) fn set_notifier(&self, notifier: Arc<dyn Notifier>) {
        *self.notifier.write().expect("notifier poisoned") = notifier;
    }

    /// Runs `op` in the next group transaction; resolves once that transaction committed
    /// (and its job changes were told to the notifier).
    pub(crate) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let health = self.health.clone();
        let work: Work = Box::new(move |conn| {
            let (outcome, changes) = match conn {
                Ok(conn) => in_savepoint(conn, op),
                Err(err) => (Err(err.clone()), Vec::new()),
            };
            let reply: Reply = Box::new(move |commit_error: Option<&StoreError>| {
                let answer = match commit_error {
                    Some(err) => Err(err.clone()),
                    None => outcome,
                };
                health.record(answer.as_ref().err());
                let _ = tx.send(answer);
            });
            (reply, changes)
        });
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.sender
            .as_ref()
            .ok_or_else(stopped)?
            .send(work)
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Why writes are failing, while they are: the database file is gone, the disk is full,
    /// the file system is read-only.
    pub(crate) fn failing(&self) -> Option<StoreError> {
        self.health.failing()
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            requests: self.counters.requests.load(Ordering::Relaxed),
            checkpoints: self.counters.checkpoints.load(Ordering::Relaxed),
            parked_claims: self.counters.parked_claims.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Writer {
    /// Closes the channel and waits for the thread to commit what it already took.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `op` in its own savepoint; on success also applies the job-count changes its job
/// changes imply, inside the same savepoint, and returns those changes.
pub(crate) fn in_savepoint<T>(
    conn: &Connection,
    op: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
) -> (Result<T, StoreError>, Vec<JobChange>) {
    let err = db_err("opening a savepoint");
    if let Err(e) = exec_cached(conn, "SAVEPOINT request") {
        return (Err(err(e)), Vec::new());
    }
    let tx = Tx::new(conn);
    let outcome = catch_unwind(AssertUnwindSafe(|| op(&tx))).unwrap_or_else(|_| {
        Err(StoreError::backend(
            "running a write request",
            "the request panicked; it was rolled back",
        ))
    });
    let (outcome, changes) = match outcome {
        Ok(value) => match tx.finish() {
            Ok(changes) => (Ok(value), changes),
            Err(e) => (Err(e), Vec::new()),
        },
        Err(e) => (Err(e), Vec::new()),
    };
    if outcome.is_err() {
        if let Err(e) = exec_cached(conn, "ROLLBACK TO request") {
            return (Err(err(e)), Vec::new());
        }
    }
    if let Err(e) = exec_cached(conn, "RELEASE request") {
        return (Err(err(e)), Vec::new());
    }
    (outcome, changes)
}

fn run(
    mut conn: Connection,
    mut receiver: mpsc::Receiver<Work>,
    counters: &WriterCounters,
    notifier: &SharedNotifier,
    parking: &Parking,
    file: &DatabaseFile,
) {
    let checkpoints = Checkpoints::install(&mut conn);
    let mut group: Vec<Work> = Vec::with_capacity(MAX_GROUP);
    let mut next = NextRequest::default();
    while let Some(first) = next.wait(&mut receiver) {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(work) => group.push(work),
                Err(_) => break,
            }
        }
        counters.transactions.fetch_add(1, Ordering::Relaxed);
        counters
            .requests
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        let began = file.check().and_then(|()| {
            exec_cached(&conn, "BEGIN IMMEDIATE")
                .map_err(|e| crate::sql::classify("starting a write transaction", e))
        });
        if let Err(err) = began {
            for work in group.drain(..) {
                work(Err(&err)).0(None);
            }
            continue;
        }
        let mut replies: Vec<Reply> = Vec::with_capacity(group.len());
        let mut changes: Vec<JobChange> = Vec::new();
        for work in group.drain(..) {
            let (reply, mut made) = work(Ok(&conn));
            replies.push(reply);
            changes.append(&mut made);
        }
        // Claims parked by idle fetches take what this group made ready, in this commit.
        let served = parking.serve(&conn, &mut changes);
        counters
            .parked_claims
            .fetch_add(served.len() as u64, Ordering::Relaxed);
        let commit_error = exec_cached(&conn, "COMMIT")
            .err()
            .map(|e| crate::sql::classify("committing", e));
        if commit_error.is_some() {
            let _ = exec_cached(&conn, "ROLLBACK");
        } else if !changes.is_empty() {
            // Told before anyone hears "done", so a caller that then waits on a change
            // cannot miss it.
            let notifier = notifier.read().expect("notifier poisoned").clone();
            notifier.notify(&changes);
        }
        for reply in replies {
            reply(commit_error.as_ref());
        }
        for (ticket, answer) in served {
            ticket.answer(match &commit_error {
                Some(err) => Err(err.clone()),
                None => answer,
            });
        }
        // Only after everyone waiting on this commit has their answer.
        checkpoints.after_group(&conn, receiver.is_empty(), counters);
        next.group_done();
    }
}

/// The database file the writer opened. A file deleted or replaced under a running server
/// keeps taking writes through the open connection — into an inode nothing will open again,
/// so every write acknowledged after that would be lost at the next start. The writer checks
/// before each group (one `stat`, about a microsecond beside a commit's fsync) and refuses
/// the group as unavailable instead ([`WriteHealth`] says so in the log, once).
struct DatabaseFile {
    path: PathBuf,
    /// Device and inode at open; `None` when they could not be read (no check then).
    identity: Option<(u64, u64)>,
}

impl DatabaseFile {
    fn of(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            identity: Self::identity(path),
        }
    }

    fn identity(path: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
    }

    fn check(&self) -> Result<(), StoreError> {
        let Some(opened) = self.identity else {
            return Ok(());
        };
        let now = Self::identity(&self.path);
        if now == Some(opened) {
            return Ok(());
        }
        let what = if now.is_none() { "deleted" } else { "replaced" };
        Err(StoreError::Unavailable(format!(
            "database file {} was {what} while Rota was running; writes are refused (they \
             would be lost); restore the file or restart Rota",
            self.path.display()
        )))
    }
}

/// Whether writes are failing because the database cannot take them (its file deleted or
/// replaced, the disk full, the file system read-only): the last such failure, until a write
/// succeeds again. `/readyz` reports it; the log hears each change once, not every refused
/// request.
#[derive(Debug)]
struct WriteHealth {
    path: PathBuf,
    failing: Mutex<Option<StoreError>>,
}

impl WriteHealth {
    fn of(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            failing: Mutex::default(),
        }
    }

    /// The failure, said plainly: which file's disk is full; and where SQLite only says
    /// "disk I/O error", whether it is because the file system
    /// gone read-only (ext4 remounts itself so after an error) is found by opening the file
    /// for writing, which changes nothing.
    fn explain(&self, err: &StoreError) -> StoreError {
        if err.kind() == ErrorKind::StorageFull {
            return StoreError::StorageFull(format!(
                "the disk holding database file {} is full; writes are refused until space is \
                 freed, reads go on ({err})",
                self.path.display()
            ));
        }
        let read_only = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ReadOnlyFilesystem);
        if read_only {
            StoreError::Unavailable(format!(
                "the file system holding database file {} is read-only (remounted after a disk \
                 error?); writes are refused, reads go on ({err})",
                self.path.display()
            ))
        } else {
            err.clone()
        }
    }

    /// One write's outcome: an error that says the database cannot take writes marks the
    /// store failing; a success clears it. Other errors (invalid input, conflicts) say
    /// nothing about the database.
    fn record(&self, error: Option<&StoreError>) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        match error {
            Some(err) if matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::StorageFull) => {
                if failing.is_none() {
                    let explained = self.explain(err);
                    tracing::error!("writes are failing: {explained}");
                    *failing = Some(explained);
                }
            }
            Some(_) => {}
            None => {
                if failing.take().is_some() {
                    tracing::info!("writes succeed again");
                }
            }
        }
    }

    fn failing(&self) -> Option<StoreError> {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Longest the writer spins for the next request before it sleeps, when requests have been
/// arriving back to back.
pub const SPIN_MAX: Duration = Duration::from_micros(300);
/// Requests count as back to back when one woke the writer within this of the previous
/// group's end (the writer's own wake-up included), and that group took at most this long.
pub const SPIN_WHEN_WITHIN: Duration = Duration::from_millis(1);

/// How the writer waits for its next request. Sleeping is cheap in CPU but waking a sleeping
/// thread is not: on this two-vCPU VM the sender's wake-up and the writer's return to a core
/// cost ~150 µs per call, half of a one-job enqueue without fsync (W1 under NORMAL: 3,050
/// jobs/s sleeping, 5,980 spinning). So while requests arrive within [`SPIN_WHEN_WITHIN`]
/// of the previous group's end — one client sending call after call — the writer spins up
/// to [`SPIN_MAX`] before it sleeps; a spin that finds nothing, or a request that arrives
/// later (a trickle: W3's 5 ms gaps), ends the spinning, so a quiet server burns nothing.
#[derive(Debug, Default)]
struct NextRequest {
    /// When the current group's first request was taken.
    taken_at: Option<Instant>,
    /// When the previous group's answers were sent, if it was short (a big batch gains
    /// nothing from saving a wake-up, and its client needs the CPU to send the next one).
    done_at: Option<Instant>,
    /// The previous request came within `SPIN_WHEN_WITHIN` of a short group's end.
    back_to_back: bool,
}

impl NextRequest {
    fn wait(&mut self, receiver: &mut mpsc::Receiver<Work>) -> Option<Work> {
        if self.back_to_back {
            let until = Instant::now() + SPIN_MAX;
            loop {
                match receiver.try_recv() {
                    Ok(work) => {
                        self.taken_at = Some(Instant::now());
                        return Some(work);
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    // Yielding, not busy-waiting: a thread with work on this core (the
                    // HTTP side parsing the next request) runs first.
                    Err(mpsc::error::TryRecvError::Empty) if Instant::now() < until => {
                        std::thread::yield_now()
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                }
            }
        }
        let work = receiver.blocking_recv()?;
        self.taken_at = Some(Instant::now());
        self.back_to_back = self
            .done_at
            .is_some_and(|at| at.elapsed() <= SPIN_WHEN_WITHIN);
        Some(work)
    }

    fn group_done(&mut self) {
        let now = Instant::now();
        let short = self
            .taken_at
            .is_some_and(|at| now.duration_since(at) <= SPIN_WHEN_WITHIN);
        self.done_at = short.then_some(now);
    }
}

/// WAL pages after which an idle writer checkpoints.
pub const CHECKPOINT_IDLE_PAGES: i32 = 1_000;
/// WAL pages after which the writer checkpoints between two groups even while requests wait
/// (a steady load that never leaves it idle).
pub const CHECKPOINT_BUSY_PAGES: i32 = crate::WAL_AUTOCHECKPOINT_PAGES as i32;

/// When the WAL is copied back into the database: never inside a commit that callers wait on
/// (SQLite's automatic checkpoint runs in the commit that crosses its threshold, which put a
/// 20 ms checkpoint into one enqueue's answer), but after a group's answers are sent — when
/// the writer is idle and the WAL holds [`CHECKPOINT_IDLE_PAGES`], or at
/// [`CHECKPOINT_BUSY_PAGES`] whatever the load. A passive checkpoint never waits for readers;
/// once it has copied everything, the next commit starts the WAL over, so the file stays
/// small.
struct Checkpoints {
    /// Pages in the WAL after the latest commit (SQLite's WAL hook).
    pages: Arc<std::sync::atomic::AtomicI32>,
}

impl Checkpoints {
    fn install(conn: &mut Connection) -> Self {
        let pages = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let seen = pages.clone();
        // Replaces SQLite's automatic checkpoint (`wal_autocheckpoint` is this same hook).
        let installed = conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n| {
            seen.store(n, Ordering::Relaxed);
            Ok(())
        }));
        if let Err(e) = installed {
            tracing::warn!(error = %e, "could not take over WAL checkpoints; SQLite checkpoints inside commits");
        }
        Self { pages }
    }

    fn after_group(&self, conn: &Connection, idle: bool, counters: &WriterCounters) {
        let pages = self.pages.load(Ordering::Relaxed);
        if pages < CHECKPOINT_BUSY_PAGES && !(idle && pages >= CHECKPOINT_IDLE_PAGES) {
            return;
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => {
                counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                self.pages.store(0, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL checkpoint failed; trying again after the next commit")
            }
        }
    }
}
