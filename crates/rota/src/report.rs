//! Reporting what became of jobs: one [`Reporter`] per worker gathers the outcomes of every
//! job that finished since its last request and sends them as one `complete`, one `fail` and
//! one `hand-back` call (at most [`REPORT_BATCH`] jobs each), while the next batch gathers.
//! Completions first wait a moment in an outbox: a lane about to fetch takes them along
//! (`/v1/complete-and-fetch`, one request and one transaction for both), and the reporter
//! sends what no fetch took within [`RIDE_GRACE`].
//! A report lost to a restarting server, a busy database or a network blip is sent again
//! while the lease is held (the job keeps being heartbeated meanwhile), so finished work is
//! never run a second time for want of a report.

use std::sync::{Arc, Mutex};

use rota_api::{
    CompleteRequest, CompletionRequest, FailRequest, FailureRequest, HandBackRequest, ItemOutcome,
    ItemOutcomes, LeaseToken,
};
use rota_core::{format_duration, JobId};
use tokio::sync::mpsc;
use tracing::warn;

use crate::context::Outcome;
use crate::worker::{chain, is_fatal, Backoff, Ran, Stop, Table};
use crate::{Client, ClientError};

/// Most outcomes sent in one request.
pub const REPORT_BATCH: usize = 1000;

/// How long a completion waits in the outbox for a fetch to take it along before the
/// reporter sends it on its own: a little over the fetch loop's gathering wait, so a
/// worker with jobs to run reports with its fetches, and one that is idle still reports
/// within a few milliseconds.
pub const RIDE_GRACE: std::time::Duration = std::time::Duration::from_millis(5);

/// One job's report, in the shape of the request that carries it.
#[derive(Debug, Clone)]
pub(crate) enum Item {
    Complete(CompletionRequest),
    Fail(FailureRequest),
    HandBack(LeaseToken),
}

impl Item {
    fn job(&self) -> JobId {
        self.lease().job
    }

    fn lease(&self) -> LeaseToken {
        match self {
            Item::Complete(c) => LeaseToken {
                job: c.job,
                token: c.token,
            },
            Item::Fail(f) => LeaseToken {
                job: f.job,
                token: f.token,
            },
            Item::HandBack(l) => *l,
        }
    }

    /// The report for what running a job came to, if anything is to be reported (a job
    /// whose lease was lost has no say any more).
    pub(crate) fn for_run(job: JobId, token: u64, ran: Ran, reason: Option<Stop>) -> Option<Self> {
        let fail = |message: String, backtrace, discard, snooze| {
            Item::Fail(FailureRequest {
                job,
                token,
                message,
                backtrace,
                discard,
                snooze,
            })
        };
        Some(match (ran, reason) {
            (Ran::Handled(Outcome::Completed(result)), _) => {
                Item::Complete(CompletionRequest { job, token, result })
            }
            (Ran::Handled(Outcome::Stopped), reason) => {
                return Self::for_run(job, token, Ran::Stopped, reason)
            }
            (Ran::Handled(Outcome::Snoozed(delay)), _) => {
                fail("snoozed".into(), None, false, Some(format_duration(delay)))
            }
            (
                Ran::Handled(Outcome::Failed {
                    message,
                    backtrace,
                    discard,
                }),
                _,
            ) => fail(message, backtrace, discard, None),
            (Ran::TimedOut(after), _) => fail(
                format!("timed out after {}", format_duration(after)),
                None,
                false,
                None,
            ),
            (Ran::Stopped, Some(Stop::TimedOut)) => fail("timed out".into(), None, false, None),
            (Ran::Stopped, Some(Stop::Shutdown)) => Item::HandBack(LeaseToken { job, token }),
            (Ran::Stopped, Some(Stop::Cancelled)) => {
                fail("cancelled on request".into(), None, false, None)
            }
            (Ran::Stopped, Some(Stop::LeaseLost) | None) => return None,
        })
    }
}

/// A report waiting to be sent.
pub(crate) struct Pending {
    item: Item,
    reason: Arc<Mutex<Option<Stop>>>,
}

impl Pending {
    /// The completion it carries, if it is one.
    pub(crate) fn completion(&self) -> Option<CompletionRequest> {
        match &self.item {
            Item::Complete(c) => Some(c.clone()),
            _ => None,
        }
    }

    fn lease_lost(&self) -> bool {
        *self.reason.lock().expect("reason poisoned") == Some(Stop::LeaseLost)
    }
}

/// The sending side: job tasks hand their reports to it and end; the job's lease stays in the
/// worker's table (and heartbeated) until its report was sent, then the reporter removes it.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::UnboundedSender<Message>,
    outbox: Outbox,
    table: Table,
}

/// Completions waiting for a fetch to take them along.
type Outbox = Arc<Mutex<Vec<Pending>>>;

enum Message {
    /// Send this with the next batch.
    Send(Pending),
    /// A completion went into the outbox: send it unless a fetch takes it first.
    Outbox,
}

impl Reporter {
    /// A reporter and the loop that sends its reports (it ends once every [`Reporter`] is
    /// dropped and the last report is sent).
    pub(crate) fn start(client: Client, table: Table) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox::default();
        let reporter = Self {
            tx,
            outbox: outbox.clone(),
            table: table.clone(),
        };
        (
            reporter,
            tokio::spawn(report_loop(client, rx, outbox, table)),
        )
    }

    /// Sends `item` with the next batch (a completion perhaps with the next fetch).
    pub(crate) fn report(&self, item: Item, reason: Arc<Mutex<Option<Stop>>>) {
        let pending = Pending { item, reason };
        // The loop outlives every sender, so the sends cannot fail.
        if matches!(pending.item, Item::Complete(_)) {
            self.outbox.lock().expect("outbox poisoned").push(pending);
            let _ = self.tx.send(Message::Outbox);
        } else {
            let _ = self.tx.send(Message::Send(pending));
        }
    }

    /// Takes up to [`REPORT_BATCH`] waiting completions, to send with a fetch.
    pub(crate) fn take_completions(&self) -> Vec<Pending> {
        let mut outbox = self.outbox.lock().expect("outbox poisoned");
        let n = outbox.len().min(REPORT_BATCH);
        outbox.drain(..n).collect()
    }

    /// The completions a fetch took were answered: log the refused ones and stop
    /// heartbeating all of them.
    pub(crate) fn answered(&self, sent: Vec<Pending>, outcomes: Vec<ItemOutcome>) {
        log_refusals(&sent, outcomes);
        release(&self.table, sent.iter().map(|p| p.item.lease()));
    }

    /// The completions a fetch took were not sent (the request failed): send them as usual,
    /// retrying while their leases are held.
    pub(crate) fn resend(&self, sent: Vec<Pending>) {
        for pending in sent {
            let _ = self.tx.send(Message::Send(pending));
        }
    }
}

/// No more heartbeats for these leases. A job fetched again meanwhile has a new token and
/// stays.
fn release(table: &Table, leases: impl IntoIterator<Item = LeaseToken>) {
    let mut running = table.lock().expect("job table poisoned");
    for lease in leases {
        if running
            .get(&lease.job)
            .is_some_and(|r| r.token == lease.token)
        {
            running.remove(&lease.job);
        }
    }
}

/// Warns about each report the server refused.
fn log_refusals(batch: &[Pending], outcomes: Vec<ItemOutcome>) {
    for (pending, outcome) in batch.iter().zip(outcomes) {
        let Some(problem) = outcome.error else {
            continue;
        };
        let job = pending.item.job();
        if problem.code == "lease_lost" {
            warn!(job = %job, detail = %problem.detail, "report refused: the lease was lost (the job was rescued after its lease expired); this outcome is dropped");
        } else {
            warn!(job = %job, code = %problem.code, detail = %problem.detail, "report refused");
        }
    }
}

async fn report_loop(
    client: Client,
    mut rx: mpsc::UnboundedReceiver<Message>,
    outbox: Outbox,
    table: Table,
) {
    while let Some(message) = rx.recv().await {
        let mut batch = Vec::new();
        let mut from_outbox = add(message, &mut batch);
        while batch.len() < REPORT_BATCH {
            match rx.try_recv() {
                Ok(message) => from_outbox |= add(message, &mut batch),
                Err(_) => break,
            }
        }
        if from_outbox {
            // Give a fetch about to leave the moment to take them along.
            tokio::time::sleep(RIDE_GRACE).await;
            batch.append(&mut outbox.lock().expect("outbox poisoned"));
        }
        send_all(&client, &table, batch).await;
    }
    // Every sender is gone: what is left in the outbox goes now.
    let rest = std::mem::take(&mut *outbox.lock().expect("outbox poisoned"));
    send_all(&client, &table, rest).await;
}

/// Sends reports as one request per kind and [`REPORT_BATCH`], then stops heartbeating
/// their leases.
async fn send_all(client: &Client, table: &Table, mut batch: Vec<Pending>) {
    while !batch.is_empty() {
        let rest = batch.split_off(batch.len().min(REPORT_BATCH));
        let (mut completes, mut fails, mut backs) = (vec![], vec![], vec![]);
        for pending in batch {
            match pending.item {
                Item::Complete(_) => completes.push(pending),
                Item::Fail(_) => fails.push(pending),
                Item::HandBack(_) => backs.push(pending),
            }
        }
        let leases: Vec<LeaseToken> = [&completes, &fails, &backs]
            .into_iter()
            .flatten()
            .map(|p| p.item.lease())
            .collect();
        tokio::join!(
            send(client, completes),
            send(client, fails),
            send(client, backs)
        );
        // Reported (or given up on).
        release(table, leases);
        batch = rest;
    }
}

/// Adds a message's report to `batch`; true when it says the outbox has completions.
fn add(message: Message, batch: &mut Vec<Pending>) -> bool {
    match message {
        Message::Send(pending) => {
            batch.push(pending);
            false
        }
        Message::Outbox => true,
    }
}

/// Sends reports of one kind as one request, retrying while their leases are held.
async fn send(client: &Client, mut batch: Vec<Pending>) {
    let mut retry = Backoff::new();
    while !batch.is_empty() {
        match request(client, &batch).await {
            Ok(outcomes) => {
                log_refusals(&batch, outcomes.results);
                return;
            }
            Err(ClientError::Api(problem)) if problem.code == "payload_too_large" => {
                if batch.len() > 1 {
                    // One result is too large: send each on its own, so only that one fails.
                    for pending in batch {
                        Box::pin(send(client, vec![pending])).await;
                    }
                    return;
                }
                let pending = &mut batch[0];
                let Item::Complete(c) = &pending.item else {
                    warn!(job = %pending.item.job(), "report larger than the server's body limit: dropped");
                    return;
                };
                // Running the job again would make the same result: fail it once, for good.
                warn!(job = %c.job, "result larger than the server's body limit: failing the job");
                pending.item = failed_for_good(
                    c,
                    format!("result too large for the server ({})", problem.detail),
                );
            }
            Err(ClientError::Api(problem)) if refused_result(&problem, batch.len()).is_some() => {
                // The server does not take one job's result (a NUL character in it, say):
                // running the job again would make the same result, so it fails for good,
                // and the rest are sent again.
                let at = refused_result(&problem, batch.len()).expect("checked");
                let mut pending = batch.remove(at);
                let job = pending.item.job();
                warn!(job = %job, detail = %problem.detail, "result refused by the server: failing the job");
                if let Item::Complete(c) = &pending.item {
                    pending.item = failed_for_good(
                        c,
                        format!("result refused by the server: {}", problem.detail),
                    );
                }
                Box::pin(send(client, vec![pending])).await;
            }
            Err(err) if is_fatal(&err) => {
                warn!(jobs = batch.len(), error = %err, "report refused");
                return;
            }
            Err(err) => {
                batch.retain(|pending| {
                    let lost = pending.lease_lost();
                    if lost {
                        warn!(job = %pending.item.job(), "could not report, and the lease is lost: the job will be retried elsewhere");
                    }
                    !lost
                });
                let pause = retry.next();
                warn!(jobs = batch.len(), error = %chain(&err), retry_in = %format_duration(pause), "could not report the jobs' outcomes; retrying while their leases are held");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// A completion turned into a failure that is not retried: running the job again would make
/// the same result.
fn failed_for_good(c: &CompletionRequest, message: String) -> Item {
    Item::Fail(FailureRequest {
        job: c.job,
        token: c.token,
        message,
        backtrace: None,
        discard: true,
        snooze: None,
    })
}

/// The position of the completion whose result a 422 names (`completions[3].result...`).
fn refused_result(problem: &rota_api::Problem, len: usize) -> Option<usize> {
    let field = problem.field.as_deref()?.strip_prefix("completions[")?;
    let (index, rest) = field.split_once(']')?;
    let index: usize = index.parse().ok()?;
    (problem.status == 422 && rest.starts_with(".result") && index < len).then_some(index)
}

async fn request(client: &Client, batch: &[Pending]) -> Result<ItemOutcomes, ClientError> {
    match &batch[0].item {
        Item::Complete(_) => {
            let completions = batch
                .iter()
                .filter_map(|p| match &p.item {
                    Item::Complete(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            client.complete(&CompleteRequest { completions }).await
        }
        Item::Fail(_) => {
            let failures = batch
                .iter()
                .filter_map(|p| match &p.item {
                    Item::Fail(f) => Some(f.clone()),
                    _ => None,
                })
                .collect();
            client.fail(&FailRequest { failures }).await
        }
        Item::HandBack(_) => {
            let leases = batch
                .iter()
                .filter_map(|p| match &p.item {
                    Item::HandBack(l) => Some(*l),
                    _ => None,
                })
                .collect();
            client.hand_back(&HandBackRequest { leases }).await
        }
    }
}
