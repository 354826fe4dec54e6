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

/// A listing with a scan limit looks at no more jobs than that: a page the limit ends
/// before it fills is partial and continues where the scan stopped, so a rare filter
/// answers in bounded time and still finds every match, page by page.
pub async fn a_scan_limit_bounds_a_listing_and_continues_it(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..10u64 {
        let kind = if i < 5 { "a" } else { "b" };
        let id = insert_one(store, new_job(kind), add_duration(now, secs(i)))
            .await
            .id;
        if i < 5 {
            a.push(id)
        } else {
            b.push(id)
        }
    }
    let list = |after, scan| JobListParams {
        filter: JobFilter {
            kinds: vec!["a".into()],
            ..JobFilter::default()
        },
        after,
        limit: 3,
        scan,
    };
    // The four newest are all b: nothing found, continue from the oldest looked at.
    let page = store.job_list(list(None, Some(4))).await.unwrap();
    assert!(page.jobs.is_empty());
    assert!(page.partial);
    assert_eq!(page.next, Some(b[1]));
    // The next four hold three a's: a full page, continued from the oldest looked at.
    let page = store.job_list(list(page.next, Some(4))).await.unwrap();
    let ids: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a[4], a[3], a[2]]);
    assert!(!page.partial, "the page is full");
    assert_eq!(page.next, Some(a[2]));
    // Two jobs are left: the scan reaches the oldest, and the listing ends.
    let page = store.job_list(list(page.next, Some(4))).await.unwrap();
    let ids: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a[1], a[0]]);
    assert_eq!(page.next, None);
    assert!(!page.partial);
    // Without a limit the listing looks as far as it must.
    let page = store.job_list(list(None, None)).await.unwrap();
    let ids: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![a[4], a[3], a[2]]);
    assert_eq!(page.next, Some(a[2]));
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
                scan: None,
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
            scan: None,
        })
        .await
        .unwrap();
    // Even i with i % 5 == 0 and i >= 1: 10 and 20.
    let got: Vec<_> = page.jobs.iter().map(|j| j.id).collect();
    assert_eq!(got, [ids[20], ids[10]]);
    assert!(page.jobs.iter().all(|j| filter.matches(j)));
    assert_eq!(page.next, None);
}
