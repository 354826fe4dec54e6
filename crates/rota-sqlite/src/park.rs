//! Parked claims on SQLite: the writer runs them at the end of a group that made a job of
//! their queues ready, inside that group's transaction, and answers them after its commit
//! (see [`rota_store::ClaimTicket`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rota_core::JobState;
use rota_store::{ClaimAnswer, ClaimMemory, ClaimTicket, JobChange};
use rusqlite::Connection;

/// The parked claims, oldest first, and the claim memory every claim shares.
#[derive(Debug, Default)]
pub(crate) struct Parking {
    tickets: Mutex<Vec<Arc<ClaimTicket>>>,
    memory: Arc<ClaimMemory>,
}

/// Tickets taken in a group, with their claims' answers, to be sent after the commit.
pub(crate) type Served = Vec<(Arc<ClaimTicket>, ClaimAnswer)>;

impl Parking {
    pub(crate) fn new(memory: Arc<ClaimMemory>) -> Self {
        Self {
            tickets: Mutex::default(),
            memory,
        }
    }

    /// Parks `ticket` (dropping tickets no longer armed).
    pub(crate) fn park(&self, ticket: Arc<ClaimTicket>) {
        let mut tickets = self.tickets.lock().expect("parking poisoned");
        tickets.retain(|t| t.is_armed());
        tickets.push(ticket);
    }

    /// Runs, on the writer's open transaction, parked claims for the jobs `changes` made
    /// ready, oldest claim first, each in its own savepoint, while any of those jobs may be
    /// left: one ready job takes one parked claim, not all of them. Their job changes join
    /// `changes`.
    pub(crate) fn serve(&self, conn: &Connection, changes: &mut Vec<JobChange>) -> Served {
        let waiting: Vec<Arc<ClaimTicket>> = {
            let mut tickets = self.tickets.lock().expect("parking poisoned");
            tickets.retain(|t| t.is_armed());
            tickets.clone()
        };
        if waiting.is_empty() {
            return Vec::new();
        }
        // Jobs made ready, per queue and kind.
        let mut ready: HashMap<(String, String), usize> = HashMap::new();
        for c in changes.iter().filter(|c| c.to == Some(JobState::Available)) {
            *ready.entry((c.queue.clone(), c.kind.clone())).or_default() += 1;
        }
        if ready.is_empty() {
            return Vec::new();
        }
        let mut served = Vec::new();
        let mut made = Vec::new();
        for ticket in waiting {
            let wanted = |((queue, kind), &left): (&(String, String), &usize)| {
                left > 0 && ticket.takes_kind(kind) && ticket.queues().contains(queue)
            };
            if !ready.iter().any(wanted) {
                continue;
            }
            let Some(claim) = ticket.take() else {
                continue;
            };
            let (max, any_kind, queues) = (claim.max, claim.kinds.is_empty(), claim.queues.clone());
            let memory = &self.memory;
            let (answer, mut changed) = crate::writer::in_savepoint(conn, move |tx| {
                crate::sql::job_claim_many(tx, claim, memory)
            });
            let got = answer.as_ref().map_or(&[][..], Vec::as_slice);
            for job in got {
                if let Some(left) = ready.get_mut(&(job.queue.clone(), job.kind.clone())) {
                    *left = left.saturating_sub(1);
                }
            }
            if any_kind && got.len() < max {
                // Nothing more is ready in its queues.
                for ((queue, _), left) in ready.iter_mut() {
                    if queues.contains(queue) {
                        *left = 0;
                    }
                }
            }
            made.append(&mut changed);
            served.push((ticket, answer));
        }
        changes.append(&mut made);
        served
    }
}
