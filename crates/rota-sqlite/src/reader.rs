//! A few read-only connections, used from blocking threads.
//!
//! In WAL mode readers never block the writer nor each other, and each read sees every
//! transaction committed before it began, so a job is readable as soon as its enqueue
//! returned.

use std::path::PathBuf;
use std::sync::Mutex;

use rota_store::StoreError;
use rusqlite::{Connection, OpenFlags};

use crate::sql::db_err;

/// A pool of reader connections.
#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    keep: usize,
}

impl Readers {
    /// A pool keeping up to `keep` idle connections to `path`.
    pub fn new(path: PathBuf, keep: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err("opening a reader connection"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db_err("configuring a reader connection"))?;
        crate::stable_plans(&conn).map_err(db_err("configuring a reader connection"))?;
        Ok(conn)
    }

    /// Runs `op` on a reader connection in a blocking thread.
    pub async fn read<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = match self.idle.lock().expect("reader pool poisoned").pop() {
            Some(conn) => conn,
            None => self.open()?,
        };
        let (conn, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = op(&conn);
            (conn, outcome)
        })
        .await
        .map_err(|e| StoreError::backend("running a read", e))?;
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < self.keep {
            idle.push(conn);
        }
        outcome
    }
}
