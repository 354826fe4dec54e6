//! Parked claims: a fetch that found nothing leaves its claim with the backend, which runs
//! it inside the transaction that next makes a job of its queues ready.
//!
//! Without this, a job enqueued for an idle worker costs two commits before the worker has
//! it — the enqueue's, then (after the wake-up reaches the waiting fetch) the claim's — so
//! enqueue-to-start is two fsyncs. Parked, the claim rides the enqueue's transaction: one
//! fsync, and the fetch is answered the moment the enqueue is.
//!
//! A [`ClaimTicket`] is taken at most once, by the backend or by its fetch withdrawing it:
//! a fetch that gives up (its wait ran out, another wake-up came first) withdraws; if the
//! backend took the ticket first, the fetch waits for the answer, which comes right after the
//! commit. So a job leased for a parked claim always reaches its fetch.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use rota_core::{Clock, Job};
use tokio::sync::oneshot;

use crate::{JobClaimManyParams, StoreError};

const ARMED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

/// What a parked claim was answered: the jobs leased for it (possibly none), or why not.
pub type ClaimAnswer = Result<Vec<Job>, StoreError>;

/// The backend's side of a parked claim.
pub struct ClaimTicket {
    state: Arc<AtomicU8>,
    claim: JobClaimManyParams,
    clock: Arc<dyn Clock>,
    answer: Mutex<Option<oneshot::Sender<ClaimAnswer>>>,
}

impl std::fmt::Debug for ClaimTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimTicket")
            .field("state", &self.state.load(Ordering::Relaxed))
            .field("claim", &self.claim)
            .finish()
    }
}

impl ClaimTicket {
    /// A ticket for `claim` (whose `now` is read again from `clock` when it runs) and the
    /// fetch's side of it.
    pub fn new(claim: JobClaimManyParams, clock: Arc<dyn Clock>) -> (Arc<Self>, ParkedClaim) {
        let (sender, receiver) = oneshot::channel();
        let state = Arc::new(AtomicU8::new(ARMED));
        let ticket = Arc::new(Self {
            state: state.clone(),
            claim,
            clock,
            answer: Mutex::new(Some(sender)),
        });
        let parked = ParkedClaim {
            state,
            answer: receiver,
        };
        (ticket, parked)
    }

    /// The queues it claims from.
    pub fn queues(&self) -> &[String] {
        &self.claim.queues
    }

    /// Whether it takes jobs of `kind` (it names no kinds, or this one).
    pub fn takes_kind(&self, kind: &str) -> bool {
        crate::takes_kind(&self.claim.kinds, kind)
    }

    /// Still waiting: neither taken nor withdrawn (a backend drops the others).
    pub fn is_armed(&self) -> bool {
        self.state.load(Ordering::Acquire) == ARMED
    }

    /// Takes the ticket for a claim in the current transaction, with `now` from its clock;
    /// `None` if its fetch withdrew it (or it was taken before). Whoever takes it must
    /// [`answer`](Self::answer) it.
    pub fn take(&self) -> Option<JobClaimManyParams> {
        self.state
            .compare_exchange(ARMED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let mut claim = self.claim.clone();
        claim.now = self.clock.now();
        Some(claim)
    }

    /// Answers a taken ticket: call after the transaction's commit (with the commit's error
    /// if it failed, so nothing is taken to be leased that is not).
    pub fn answer(&self, answer: ClaimAnswer) {
        if let Some(sender) = self.answer.lock().expect("ticket poisoned").take() {
            let _ = sender.send(answer);
        }
    }
}

/// The fetch's side of a parked claim. Dropping it withdraws it (a fetch whose client went
/// away must not have jobs leased for it while their leases run out).
#[derive(Debug)]
pub struct ParkedClaim {
    state: Arc<AtomicU8>,
    answer: oneshot::Receiver<ClaimAnswer>,
}

impl ParkedClaim {
    /// Resolves once the backend ran the claim and committed.
    pub async fn answered(&mut self) -> ClaimAnswer {
        (&mut self.answer)
            .await
            .unwrap_or_else(|_| Err(backend_gone()))
    }

    /// Withdraws the claim. `None`: withdrawn before the backend took it, nothing was
    /// leased for it. `Some`: the backend had taken it; this is its answer (it waits for
    /// the commit), and its jobs are this fetch's.
    pub async fn withdraw(mut self) -> Option<ClaimAnswer> {
        if self.withdrawn() {
            return None;
        }
        Some(self.answered().await)
    }

    /// Withdraws it if it is still armed; says whether it was.
    fn withdrawn(&self) -> bool {
        self.state
            .compare_exchange(ARMED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

impl Drop for ParkedClaim {
    fn drop(&mut self) {
        self.withdrawn();
    }
}

fn backend_gone() -> StoreError {
    StoreError::Unavailable("the store stopped before answering a parked claim".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rota_core::SystemClock;

    fn ticket() -> (Arc<ClaimTicket>, ParkedClaim) {
        ClaimTicket::new(
            JobClaimManyParams {
                worker: "w".into(),
                queues: vec!["default".into()],
                kinds: vec![],
                max: 1,
                lease: std::time::Duration::from_secs(30),
                now: SystemClock.now(),
            },
            Arc::new(SystemClock),
        )
    }

    #[tokio::test]
    async fn a_withdrawn_ticket_cannot_be_taken() {
        let (ticket, parked) = ticket();
        assert!(parked.withdraw().await.is_none());
        assert!(!ticket.is_armed());
        assert!(ticket.take().is_none());
    }

    #[test]
    fn a_dropped_claim_is_withdrawn() {
        let (ticket, parked) = ticket();
        drop(parked);
        assert!(
            ticket.take().is_none(),
            "nothing is leased for a fetch that is gone"
        );
    }

    #[tokio::test]
    async fn a_taken_ticket_is_answered_even_when_withdrawn_after() {
        let (ticket, parked) = ticket();
        assert!(ticket.take().is_some());
        assert!(ticket.take().is_none(), "taken once only");
        let answering = ticket.clone();
        tokio::spawn(async move { answering.answer(Ok(Vec::new())) });
        let answer = parked
            .withdraw()
            .await
            .expect("taken: the fetch gets the answer");
        assert!(answer.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_ticket_dropped_unanswered_is_an_error_not_a_hang() {
        let (ticket, mut parked) = ticket();
        assert!(ticket.take().is_some());
        drop(ticket);
        let err = parked.answered().await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Unavailable);
    }
}
