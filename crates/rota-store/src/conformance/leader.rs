//! Leadership: one lease row per led thing, taken over after expiry.

use super::*;

fn elect(name: &str, holder: &str, now: Timestamp) -> LeaderElectParams {
    LeaderElectParams {
        name: name.into(),
        holder: holder.into(),
        ttl: secs(15),
        now,
    }
}

/// Two contenders: one leads, the other is told who.
pub async fn two_contenders_elect_one_leader(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let (a, b) = tokio::join!(
        store.leader_attempt_elect(elect("maintenance", "node-a", now)),
        store.leader_attempt_elect(elect("maintenance", "node-b", now)),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_leader != b.is_leader, "exactly one leads: {a:?} {b:?}");
    assert_eq!(a.holder, b.holder);
    assert_eq!(a.expires_at, add_duration(now, secs(15)));
    // Another name is led independently.
    assert!(
        store
            .leader_attempt_elect(elect("other", "node-b", now))
            .await
            .unwrap()
            .is_leader
    );
}

/// A leader that renews keeps it; one that stops is replaced once its lease expired.
pub async fn a_leader_that_stops_renewing_is_replaced_after_expiry(s: Subject) {
    let store = &*s.store;
    let now = t0();
    assert!(
        store
            .leader_attempt_elect(elect("m", "a", now))
            .await
            .unwrap()
            .is_leader
    );
    let later = add_duration(now, secs(10));
    let renewed = store
        .leader_renew(LeaderRenewParams {
            name: "m".into(),
            holder: "a".into(),
            ttl: secs(15),
            now: later,
        })
        .await
        .unwrap();
    assert!(renewed.is_leader);
    assert_eq!(renewed.expires_at, add_duration(later, secs(15)));
    let before_expiry = add_duration(later, secs(14));
    let b = store
        .leader_attempt_elect(elect("m", "b", before_expiry))
        .await
        .unwrap();
    assert!(!b.is_leader, "a still leads until its lease expires");
    assert_eq!(b.holder, "a");
    let after_expiry = add_duration(later, secs(15));
    let b = store
        .leader_attempt_elect(elect("m", "b", after_expiry))
        .await
        .unwrap();
    assert!(b.is_leader, "b takes over after the expiry: {b:?}");
    let late = store
        .leader_renew(LeaderRenewParams {
            name: "m".into(),
            holder: "a".into(),
            ttl: secs(15),
            now: after_expiry,
        })
        .await
        .unwrap();
    assert!(!late.is_leader, "a's late renewal does not take it back");
    assert_eq!(late.holder, "b");
}

/// Reading the leadership names the holder and its expiry and changes nothing; an unheld
/// leadership reads as none.
pub async fn the_leader_can_be_read_without_changing_it(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let get = |holder: &str| LeaderGetParams {
        name: "m".into(),
        holder: holder.into(),
    };
    assert_eq!(store.leader_get(get("a")).await.unwrap(), None);
    store
        .leader_attempt_elect(elect("m", "a", now))
        .await
        .unwrap();
    let seen_by_b = store.leader_get(get("b")).await.unwrap().unwrap();
    assert_eq!(seen_by_b.holder, "a");
    assert!(!seen_by_b.is_leader);
    assert_eq!(seen_by_b.expires_at, add_duration(now, secs(15)));
    assert!(store.leader_get(get("a")).await.unwrap().unwrap().is_leader);
    assert!(
        !store
            .leader_attempt_elect(elect("m", "b", now))
            .await
            .unwrap()
            .is_leader,
        "reading took nothing"
    );
    store
        .leader_resign(LeaderResignParams {
            name: "m".into(),
            holder: "a".into(),
            now,
        })
        .await
        .unwrap();
    assert_eq!(store.leader_get(get("b")).await.unwrap(), None);
}

/// A resigned leader hands over at once, without waiting for the expiry.
pub async fn a_resigned_leader_hands_over_at_once(s: Subject) {
    let store = &*s.store;
    let now = t0();
    assert!(
        store
            .leader_attempt_elect(elect("m", "a", now))
            .await
            .unwrap()
            .is_leader
    );
    // Someone else resigning changes nothing.
    store
        .leader_resign(LeaderResignParams {
            name: "m".into(),
            holder: "b".into(),
            now,
        })
        .await
        .unwrap();
    assert!(
        !store
            .leader_attempt_elect(elect("m", "b", now))
            .await
            .unwrap()
            .is_leader
    );
    store
        .leader_resign(LeaderResignParams {
            name: "m".into(),
            holder: "a".into(),
            now,
        })
        .await
        .unwrap();
    assert!(
        store
            .leader_attempt_elect(elect("m", "b", now))
            .await
            .unwrap()
            .is_leader
    );
}
