//! Reading jobs: get and filtered, paged listing.

use rota_core::{add_duration, JobId, JobState};

use super::*;

/// An unknown id is NotFound, naming the id.
pub async fn a_missing_job_is_not_found(s: Subject) {
    let id = JobId::new(t0());
    let err = s.store.job_get(JobGetParams { id }).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains(&id.to_string()));
}

/// Filters combine; pages are newest first and the cursor walks them without overlap.
pub async fn listing_filters_and_pages_newest_first(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let mut ids = Vec::new();
    for i in 0..25u64 {
        let job = new_job(if i % 2 == 0 { "even" } else { "odd" }).tag(format!("t{}", i % 5));
        ids.push(insert_one(store, job, add_duration(now, secs(i))).await.id);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .job_list(JobListParams {
                filter: JobFilter::default(),
                after,
                limit: 10,
            })
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let filter = JobFilter {
        kinds: vec!["even".into()],
        tag: Some("t0".into()),
        states: vec![JobState::Available],
        created_after: Some(add_duration(now, secs(1))),
        ..JobFilter::default()
    };
    let page = store
        .job_list(JobListParams {
            filter: filter.clone(),
            after: None,
            limit: 100,
        })
        .await
        .unwrap();
    // Even i with i % 5 == 0 and i >= 1: 10 and 20.
    let got: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(got, [ids[20], ids[10]]);
    assert!(page.jobs.iter().all(|j| filter.matches(j)));
    assert_eq!(page.next, None);
}
