//! The NOTIFY side of cross-node wake-ups for this node's own writes: after a write commits,
//! its notifications go to one task with a connection of its own, which sends everything
//! that queued up meanwhile in one statement. So a commit never waits for PostgreSQL's
//! notification work (a global lock and a wake-up of every listening backend), and a burst of
//! commits costs one NOTIFY statement. Notifications are hints: if the connection is down,
//! the ones in hand are dropped and the others' safety poll covers them.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{Config, NoTls};

use crate::notification;

/// Hands notifications to the sending task.
#[derive(Debug, Clone)]
pub(crate) struct Broadcaster {
    queue: mpsc::UnboundedSender<Vec<String>>,
}

impl Broadcaster {
    /// A broadcaster, and the task that sends (run it until the store drops).
    pub(crate) fn new(config: Config) -> (Self, impl std::future::Future<Output = ()>) {
        let (queue, pending) = mpsc::unbounded_channel();
        (Self { queue }, run(config, pending))
    }

    /// Queues payloads for sending.
    pub(crate) fn send(&self, payloads: Vec<String>) {
        if !payloads.is_empty() {
            let _ = self.queue.send(payloads);
        }
    }
}

async fn run(config: Config, mut pending: mpsc::UnboundedReceiver<Vec<String>>) {
    loop {
        let client = match config.connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(err) => {
                tracing::debug!(error = %err, "NOTIFY connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let statement = match client
            .prepare(&format!(
                "SELECT count(pg_notify('{}', p)) FROM unnest($1::text[]) p",
                notification::CHANNEL
            ))
            .await
        {
            Ok(statement) => statement,
            Err(err) => {
                tracing::debug!(error = %err, "NOTIFY connection failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let Some(mut payloads) = pending.recv().await else {
                return;
            };
            while let Ok(more) = pending.try_recv() {
                payloads.extend(more);
            }
            if let Err(err) = client.query(&statement, &[&payloads]).await {
                tracing::debug!(error = %err, "sending notifications failed; reconnecting");
                break;
            }
        }
    }
}
