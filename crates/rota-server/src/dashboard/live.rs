//! Live updates: one producer per server renders the changing parts of the pages (counts,
//! queues, error groups, the doctor's warnings) at most once a second while any page
//! listens, and every open page receives the same frame over `/events` (server-sent
//! events). The producer reads the shared diagnostics snapshot (memory) and the error
//! groups (one bounded query, shared with the page loads), so ten open tabs cost the
//! database what one does. Pages close their stream while hidden.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use rota_store::{DeadGroupsParams, ErrorGroup, JobChange, Notifier, StoreError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Failed live frames, logged at most once per [`rota_engine::QUIET_PERIOD`].
static FRAME_FAILED: rota_engine::LogThrottle =
    rota_engine::LogThrottle::new(rota_engine::QUIET_PERIOD);

/// Dead jobs read to group errors: the latest this many (groups are marked approximate when
/// more are dead).
pub const GROUPS_SAMPLE: usize = 10_000;
/// How often the producer renders, at most.
pub const FRAME_EVERY: Duration = Duration::from_secs(1);

/// Error groups as last read.
#[derive(Debug)]
pub struct Groups {
    /// Largest first.
    pub groups: Vec<ErrorGroup>,
    /// Whether only the latest [`GROUPS_SAMPLE`] dead jobs were read.
    pub sampled: bool,
    taken: tokio::time::Instant,
}

/// The producer's state.
#[derive(Debug)]
pub struct Live {
    changed: AtomicBool,
    frame: watch::Sender<Arc<String>>,
    groups: tokio::sync::Mutex<Option<Arc<Groups>>>,
    last_fragments: Mutex<String>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            changed: AtomicBool::new(true),
            frame: watch::Sender::new(Arc::new(String::new())),
            groups: tokio::sync::Mutex::new(None),
            last_fragments: Mutex::new(String::new()),
        }
    }
}

impl Notifier for Live {
    fn notify(&self, _changes: &[JobChange]) {
        self.changed.store(true, Ordering::Relaxed);
    }

    fn notify_remote(&self, _changes: &[JobChange]) {
        self.changed.store(true, Ordering::Relaxed);
    }
}

impl Live {
    /// The error groups, read at most once per [`FRAME_EVERY`] whoever asks (pages and the
    /// producer share the read).
    pub async fn groups(&self, state: &AppState) -> Result<Arc<Groups>, StoreError> {
        let mut cached = self.groups.lock().await;
        if let Some(groups) = cached.as_ref() {
            if groups.taken.elapsed() < FRAME_EVERY {
                return Ok(groups.clone());
            }
        }
        let groups = state
            .store
            .dead_groups(DeadGroupsParams {
                since: None,
                latest: Some(GROUPS_SAMPLE),
            })
            .await?;
        state.metrics.dashboard_read("error_groups");
        let read: u64 = groups.iter().map(|g| g.count).sum();
        let fresh = Arc::new(Groups {
            sampled: read >= GROUPS_SAMPLE as u64,
            groups,
            taken: tokio::time::Instant::now(),
        });
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Something changed that the notifier does not hear (a queue paused): the next frame
    /// re-reads everything.
    pub fn touch(&self) {
        self.changed.store(true, Ordering::Relaxed);
        if let Ok(mut groups) = self.groups.try_lock() {
            *groups = None;
        }
    }

    /// How many pages listen now.
    pub fn listeners(&self) -> usize {
        self.frame.receiver_count()
    }

    /// Renders and sends frames while pages listen, until `shutdown`.
    pub async fn run(self: Arc<Self>, state: AppState, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(FRAME_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet_ticks = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            state.metrics.dashboard_listeners(self.listeners());
            if self.listeners() == 0 {
                continue;
            }
            // Without changes, a frame every 5 s still moves ages and worker liveness.
            let changed = self.changed.swap(false, Ordering::Relaxed);
            quiet_ticks += 1;
            if !changed && quiet_ticks < 5 {
                continue;
            }
            quiet_ticks = 0;
            match fragments(&state).await {
                Ok(fragments) => {
                    state.metrics.dashboard_read("frames");
                    self.publish(fragments)
                }
                Err(err) => {
                    if let Some(held_back) = FRAME_FAILED.admit(std::time::Instant::now()) {
                        tracing::warn!(error = %err, held_back, "dashboard live frame failed; retrying (logged at most every 10 s)");
                    }
                }
            }
        }
    }

    fn publish(&self, fragments: BTreeMap<&'static str, String>) {
        let json = serde_json::to_string(&fragments).expect("strings serialize");
        let mut last = self
            .last_fragments
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *last != json {
            last.clone_from(&json);
            self.frame.send_replace(Arc::new(json));
        }
    }
}

/// Every live part, rendered from the shared snapshot and error groups, by the id of the
/// element it fills (`data-live="…"`).
pub async fn fragments(state: &AppState) -> Result<BTreeMap<&'static str, String>, StoreError> {
    let snapshot = state.diagnostics.snapshot().await?;
    let groups = state.dashboard.live.groups(state).await?;
    let now = state.clock.now();
    let parts = super::pages::LiveParts::new(&snapshot, &groups, state, now);
    Ok(parts.render())
}

/// `GET /events`: the live frames, as server-sent events (`event: frame`, the data a JSON
/// object of element id to HTML).
pub async fn events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(refusal) = super::session::viewer(&state, &headers) {
        return super::message_page(refusal.status(), "Not logged in", &refusal.message());
    }
    let live = state.dashboard.live.clone();
    let mut frames = live.frame.subscribe();
    // Pages get a frame at once (rendered now), then each new one.
    live.changed.store(true, Ordering::Relaxed);
    frames.mark_changed();
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(frames, move |mut frames| {
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    changed = frames.changed() => changed.ok()?,
                }
                let frame = frames.borrow_and_update().clone();
                // None rendered yet: the producer renders one within a second.
                if frame.is_empty() {
                    continue;
                }
                let event = Event::default().event("frame").data(frame.as_str());
                return Some((Ok::<_, Infallible>(event), frames));
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
