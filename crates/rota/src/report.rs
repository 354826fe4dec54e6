//! Reporting what became of jobs: one [`Reporter`] per worker gathers the outcomes of every
//! job that finished since its last request and sends them as one `complete`, one `fail` and
//! one `hand-back` call (at most [`REPORT_BATCH`] jobs each), while the next batch gathers.
//! A report lost to a restarting server, a busy database or a network blip is sent again
//! while the lease is held (the job keeps being heartbeated meanwhile), so finished work is
//! never run a second time for want of a report.

use std::sync::{Arc, Mutex};

use rota_api::{
    CompleteRequest, CompletionRequest, FailRequest, FailureRequest, HandBackRequest, ItemOutcomes,
    LeaseToken,
};
use rota_core::{format_duration, JobId};
use tokio::sync::mpsc;
use tracing::warn;

use crate::context::Outcome;
use crate::worker::{chain, is_fatal, Backoff, Ran, Stop, Table};
use crate::{Client, ClientError};

/// Most outcomes sent in one request.
pub const REPORT_BATCH: usize = 1000;

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
struct Pending {
    item: Item,
    reason: Arc<Mutex<Option<Stop>>>,
}

impl Pending {
    fn lease_lost(&self) -> bool {
        *self.reason.lock().expect("reason poisoned") == Some(Stop::LeaseLost)
    }
}

/// The sending side: job tasks hand their reports to it and end; the job's lease stays in the
/// worker's table (and heartbeated) until its report was sent, then the reporter removes it.
#[derive(Clone)]
pub(crate) struct Reporter {
    tx: mpsc::UnboundedSender<Pending>,
}

impl Reporter {
    /// A reporter and the loop that sends its reports (it ends once every [`Reporter`] is
    /// dropped and the last report is sent).
    pub(crate) fn start(client: Client, table: Table) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, tokio::spawn(report_loop(client, rx, table)))
    }

    /// Sends `item` with the next batch.
    pub(crate) fn report(&self, item: Item, reason: Arc<Mutex<Option<Stop>>>) {
        // The loop outlives every sender, so the send cannot fail.
        let _ = self.tx.send(Pending { item, reason });
    }
}

async fn report_loop(client: Client, mut rx: mpsc::UnboundedReceiver<Pending>, table: Table) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < REPORT_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
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
            send(&client, completes),
            send(&client, fails),
            send(&client, backs)
        );
        // Reported (or given up on): no more heartbeats for these leases. A job fetched
        // again meanwhile has a new token and stays.
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
}

/// Sends reports of one kind as one request, retrying while their leases are held.
async fn send(client: &Client, mut batch: Vec<Pending>) {
    let mut retry = Backoff::new();
    while !batch.is_empty() {
        match request(client, &batch).await {
            Ok(outcomes) => {
                for (pending, outcome) in batch.iter().zip(outcomes.results) {
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
                pending.item = Item::Fail(FailureRequest {
                    job: c.job,
                    token: c.token,
                    message: format!("result too large for the server ({})", problem.detail),
                    backtrace: None,
                    discard: true,
                    snooze: None,
                });
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
