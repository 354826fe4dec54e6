//! The LISTEN side of cross-node wake-ups: one dedicated connection (not from the pool)
//! listening on [`notification::CHANNEL`], reconnecting by itself after the database or the
//! network went away. What it hears goes to the notifier's `notify_remote`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use crate::notification;
use crate::SharedNotifier;

/// How long to wait before reconnecting after the connection broke.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Listens until the task is aborted; `listening` is told once the first LISTEN is in place.
pub(crate) async fn run(
    config: Config,
    origin: Arc<str>,
    notifier: SharedNotifier,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    let mut listening = Some(listening);
    loop {
        if let Err(err) = listen_once(&config, &origin, &notifier, &mut listening).await {
            tracing::debug!(error = %err, "LISTEN connection ended; reconnecting");
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

async fn listen_once(
    config: &Config,
    origin: &str,
    notifier: &SharedNotifier,
    listening: &mut Option<tokio::sync::oneshot::Sender<()>>,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                if tx.send(n).is_err() {
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {}", notification::CHANNEL))
        .await?;
    if let Some(listening) = listening.take() {
        let _ = listening.send(());
    }
    while let Some(n) = rx.recv().await {
        if let Some(changes) = notification::decode(n.payload(), origin) {
            let current = notifier.read().expect("notifier lock").clone();
            current.notify_remote(&changes);
        }
    }
    driver.abort();
    Ok(())
}
