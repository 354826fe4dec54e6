//! Dead jobs: kept until explicit retention; retried with their history.

use rota_core::{add_duration, JobState};

use super::*;

async fn kill(store: &dyn Store, job: NewJob, now: Timestamp) -> Job {
    let id = insert_one(store, job.max_attempts(1), now).await.id;
    let job = claim(store, "w", &["default"], &[], 100, now)
        .await
        .into_iter()
        .find(|j| j.id == id)
        .expect("claimed");
    fail(store, lease_of(&job), "fatal", false, now).await
}

/// Dead jobs outlive any pruning until a dead retention is configured.
pub async fn dead_jobs_survive_pruning_unless_a_dead_retention_is_set(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let dead = kill(store, new_job("a"), now).await;
    assert_eq!(dead.state, JobState::Dead);
    let years_later = add_duration(now, secs(5 * 365 * 86_400));
    let prune = |dead_retention| JobPruneParams {
        queue: None,
        now: years_later,
        completed_retention: secs(86_400),
        cancelled_retention: secs(86_400),
        dead_retention,
        limit: 1000,
    };
    let report = store.job_prune(prune(None)).await.unwrap();
    assert_eq!(report.dead, 0);
    assert_eq!(
        store
            .job_get(JobGetParams { id: dead.id })
            .await
            .unwrap()
            .state,
        JobState::Dead
    );
    let report = store
        .job_prune(prune(Some(secs(30 * 86_400))))
        .await
        .unwrap();
    assert_eq!(report.dead, 1);
    assert_eq!(
        store
            .job_get(JobGetParams { id: dead.id })
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// Completed and cancelled jobs go once older than their retention; younger ones stay.
pub async fn finished_jobs_are_pruned_after_their_retention(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(store, vec![new_job("a"), new_job("a")], now).await;
    let jobs = claim(store, "w", &["default"], &[], 2, now).await;
    complete(store, lease_of(&jobs[0]), now).await.unwrap();
    complete(store, lease_of(&jobs[1]), add_duration(now, secs(3600)))
        .await
        .unwrap();
    let cancelled = insert_one(store, new_job("c"), now).await;
    store
        .job_cancel_many(JobCancelManyParams {
            ids: vec![cancelled.id],
            now,
        })
        .await
        .unwrap();
    let report = store
        .job_prune(JobPruneParams {
            queue: None,
            now: add_duration(now, secs(86_400 + 60)),
            completed_retention: secs(86_400),
            cancelled_retention: secs(86_400),
            dead_retention: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(
        report,
        PruneReport {
            completed: 1,
            cancelled: 1,
            dead: 0
        }
    );
    assert!(store
        .job_get(JobGetParams { id: jobs[0].id })
        .await
        .is_err());
    assert_eq!(
        store
            .job_get(JobGetParams { id: jobs[1].id })
            .await
            .unwrap()
            .state,
        JobState::Completed
    );
}

/// Retry by id: available again, errors and attempt count kept, one more attempt granted.
pub async fn retrying_dead_jobs_by_id_keeps_their_history(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let dead = kill(store, new_job("a"), now).await;
    let later = add_duration(now, secs(600));
    let out = store
        .job_retry_many(JobRetryManyParams {
            selector: JobSelector::Ids(vec![dead.id]),
            now: later,
        })
        .await
        .unwrap();
    let job = out[0].as_ref().unwrap();
    assert_eq!(
        (job.state, job.attempt, job.max_attempts),
        (JobState::Available, 1, 2)
    );
    assert_eq!((job.run_at, job.finished_at), (later, None));
    assert_eq!(job.errors, dead.errors);
    let again = claim(store, "w", &["default"], &[], 1, later)
        .await
        .remove(0);
    assert_eq!(again.attempt, 2);
    let dead_again = fail(store, lease_of(&again), "still fatal", false, later).await;
    assert_eq!(
        (dead_again.state, dead_again.errors.len()),
        (JobState::Dead, 2)
    );
    // Retrying something that is not dead is a conflict, not a silent change.
    let live = insert_one(store, new_job("b"), later).await;
    let out = store
        .job_retry_many(JobRetryManyParams {
            selector: JobSelector::Ids(vec![live.id]),
            now: later,
        })
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap_err().kind(), ErrorKind::Conflict);
}

/// Retry by filter: only the dead jobs matching it.
pub async fn retrying_dead_jobs_by_filter_touches_only_matching_dead_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let a1 = kill(store, new_job("a"), now).await;
    let a2 = kill(store, new_job("a"), now).await;
    let b = kill(store, new_job("b"), now).await;
    let waiting = insert_one(store, new_job("a"), now).await;
    let filter = JobFilter {
        kinds: vec!["a".into()],
        ..JobFilter::default()
    };
    let out = store
        .job_retry_many(JobRetryManyParams {
            selector: JobSelector::Filter(filter),
            now,
        })
        .await
        .unwrap();
    let mut retried: Vec<_> = out.into_iter().map(|r| r.unwrap().id).collect();
    retried.sort();
    assert_eq!(retried, [a1.id, a2.id]);
    assert_eq!(
        store
            .job_get(JobGetParams { id: b.id })
            .await
            .unwrap()
            .state,
        JobState::Dead
    );
    assert_eq!(
        store
            .job_get(JobGetParams { id: waiting.id })
            .await
            .unwrap()
            .attempt,
        0
    );
}

/// A purge deletes only the selected jobs in the given final states, and counts them.
pub async fn purging_deletes_only_matching_jobs_in_final_states(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let a1 = kill(store, new_job("a"), now).await;
    let a2 = kill(store, new_job("a"), now).await;
    let b = kill(store, new_job("b"), now).await;
    let waiting = insert_one(store, new_job("a"), now).await;
    let filter = JobFilter {
        kinds: vec!["a".into()],
        ..JobFilter::default()
    };
    let purged = store
        .job_purge(JobPurgeParams {
            selector: JobSelector::Filter(filter),
            states: vec![JobState::Dead],
        })
        .await
        .unwrap();
    assert_eq!(purged, 2);
    for id in [a1.id, a2.id] {
        assert_eq!(
            store.job_get(JobGetParams { id }).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
    assert_eq!(
        store
            .job_get(JobGetParams { id: b.id })
            .await
            .unwrap()
            .state,
        JobState::Dead
    );
    // A waiting job is never purged, even by id and even if asked for non-final states.
    let purged = store
        .job_purge(JobPurgeParams {
            selector: JobSelector::Ids(vec![waiting.id, b.id]),
            states: vec![JobState::Available, JobState::Dead],
        })
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        store
            .job_get(JobGetParams { id: waiting.id })
            .await
            .unwrap()
            .state,
        JobState::Available
    );
}

/// Dead jobs are grouped by their last error's cause, largest group first, with their kinds.
pub async fn dead_jobs_are_grouped_by_the_cause_of_their_last_error(s: Subject) {
    let store = &*s.store;
    let now = t0();
    for (kind, message) in [
        ("a", "user 17 not found"),
        ("b", "user 42 not found"),
        ("a", "disk full"),
    ] {
        insert_one(store, new_job(kind).max_attempts(1), now).await;
        let job = claim(store, "w", &["default"], &[kind], 1, now)
            .await
            .remove(0);
        fail(store, lease_of(&job), message, false, now).await;
    }
    let groups = store
        .dead_groups(DeadGroupsParams::default())
        .await
        .unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0].count, 2);
    let mut kinds = groups[0].kinds.clone();
    kinds.sort();
    assert_eq!(kinds, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(groups[1].count, 1);
    assert_eq!(groups[1].message, "disk full");
    let none = store
        .dead_groups(DeadGroupsParams {
            since: Some(add_duration(now, secs(1))),
            latest: None,
        })
        .await
        .unwrap();
    assert!(none.is_empty(), "only deaths since the given time");
}

/// A bounded read of dead groups (`latest`) groups only the most recent deaths, so a caller
/// that runs every second costs the same with a million dead jobs as with ten.
pub async fn dead_groups_can_be_read_from_the_latest_deaths_only(s: Subject) {
    let store = &*s.store;
    let now = t0();
    for (i, message) in [
        "old cause",
        "old cause",
        "new cause",
        "new cause",
        "new cause",
    ]
    .into_iter()
    .enumerate()
    {
        let at = add_duration(now, secs(i as u64));
        insert_one(store, new_job("a").max_attempts(1), at).await;
        let job = claim(store, "w", &["default"], &["a"], 1, at)
            .await
            .remove(0);
        fail(store, lease_of(&job), message, false, at).await;
    }
    let latest = store
        .dead_groups(DeadGroupsParams {
            since: None,
            latest: Some(3),
        })
        .await
        .unwrap();
    assert_eq!(latest.len(), 1, "{latest:?}");
    assert_eq!(
        (latest[0].message.as_str(), latest[0].count),
        ("new cause", 3)
    );
    let all = store
        .dead_groups(DeadGroupsParams::default())
        .await
        .unwrap();
    assert_eq!(all.iter().map(|g| g.count).sum::<u64>(), 5);
}

/// Retrying a dead job while another live job holds its unique key is refused: two live
/// jobs never share a key (issue 18).
pub async fn retrying_a_dead_job_whose_key_another_live_job_holds_is_refused(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let dead = kill(store, new_job("a").unique_key("k"), now).await;
    let live = insert_one(store, new_job("a").unique_key("k"), now).await;
    assert_ne!(live.id, dead.id, "the key was free once the first job died");
    let out = store
        .job_retry_many(JobRetryManyParams {
            selector: JobSelector::Ids(vec![dead.id]),
            now,
        })
        .await
        .unwrap()
        .remove(0);
    let err = out.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains(&live.id.to_string()), "{err}");
    assert_eq!(
        store
            .job_get(JobGetParams { id: dead.id })
            .await
            .unwrap()
            .state,
        JobState::Dead
    );
}

/// Pruning one queue touches only that queue's jobs (per-queue retention).
pub async fn pruning_a_queue_touches_only_its_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    declare(store, "mail", now).await;
    insert_one(store, new_job("a"), now).await;
    insert_one(store, NewJob::new("mail", "m", serde_json::json!({})), now).await;
    for job in claim(store, "w", &["default", "mail"], &[], 10, now).await {
        complete(store, lease_of(&job), now).await.unwrap();
    }
    let later = add_duration(now, secs(3600));
    let report = store
        .job_prune(JobPruneParams {
            queue: Some("mail".into()),
            now: later,
            completed_retention: secs(60),
            cancelled_retention: secs(60),
            dead_retention: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(report.completed, 1);
    let left = store
        .job_list(JobListParams {
            limit: 10,
            ..JobListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(left.jobs.len(), 1);
    assert_eq!(left.jobs[0].queue, "default");
}
