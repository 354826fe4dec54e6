//! The leadership lease row: one row per led thing, with holder and expiry. Taking it is a
//! conditional upsert, so it needs no advisory lock and works through connection poolers.

use rota_store::*;

use super::{from_micros, micros, Conn};

/// Who holds `name`, if anyone.
pub(crate) async fn leader_get(
    db: &impl Conn,
    name: &str,
    holder: &str,
) -> Result<Option<Leadership>, StoreError> {
    leadership(db, name, holder).await
}

async fn leadership(
    db: &impl Conn,
    name: &str,
    holder: &str,
) -> Result<Option<Leadership>, StoreError> {
    let row = db
        .query_opt(
            &format!("reading leadership of {name:?}"),
            "SELECT holder, expires_at FROM rota.leader WHERE name = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| {
        let current: String = r.get(0);
        Leadership {
            is_leader: current == holder,
            holder: current,
            expires_at: from_micros(r.get(1)),
        }
    }))
}

/// Takes the row when it is free, expired or already ours.
pub(crate) async fn leader_attempt_elect(
    db: &impl Conn,
    p: LeaderElectParams,
) -> Result<Leadership, StoreError> {
    let expires = rota_core::add_duration(p.now, p.ttl);
    db.execute(
        &format!("electing a leader of {:?}", p.name),
        "INSERT INTO rota.leader AS l (name, holder, elected_at, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET \
           holder = excluded.holder, \
           elected_at = CASE WHEN l.holder = excluded.holder THEN l.elected_at ELSE excluded.elected_at END, \
           expires_at = excluded.expires_at \
         WHERE l.holder = excluded.holder OR l.expires_at <= excluded.elected_at",
        &[&p.name, &p.holder, &micros(p.now), &micros(expires)],
    )
    .await?;
    Ok(leadership(db, &p.name, &p.holder)
        .await?
        .unwrap_or_else(|| Leadership::nobody(p.now)))
}

/// Extends the row when it is still ours.
pub(crate) async fn leader_renew(
    db: &impl Conn,
    p: LeaderRenewParams,
) -> Result<Leadership, StoreError> {
    let expires = rota_core::add_duration(p.now, p.ttl);
    let n = db
        .execute(
            &format!("renewing leadership of {:?}", p.name),
            "UPDATE rota.leader SET expires_at = $3 WHERE name = $1 AND holder = $2 AND expires_at > $4",
            &[&p.name, &p.holder, &micros(expires), &micros(p.now)],
        )
        .await?;
    let current = leadership(db, &p.name, &p.holder).await?;
    Ok(match current {
        Some(mut l) => {
            l.is_leader &= n > 0;
            l
        }
        None => Leadership::nobody(p.now),
    })
}

/// Frees the row when it is ours.
pub(crate) async fn leader_resign(db: &impl Conn, p: LeaderResignParams) -> Result<(), StoreError> {
    db.execute(
        &format!("resigning leadership of {:?}", p.name),
        "DELETE FROM rota.leader WHERE name = $1 AND holder = $2",
        &[&p.name, &p.holder],
    )
    .await?;
    Ok(())
}
