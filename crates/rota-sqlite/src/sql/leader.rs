//! The leadership lease row: one row per led thing, with holder and expiry. Taking it is a
//! conditional upsert, so it needs no database lock and works through connection poolers.

use rota_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use super::{classify, from_micros, micros};

fn leadership(
    conn: &Connection,
    name: &str,
    holder: &str,
) -> Result<Option<Leadership>, StoreError> {
    conn.prepare_cached("SELECT holder, expires_at FROM leader WHERE name = ?1")
        .and_then(|mut stmt| {
            stmt.query_row([name], |r| {
                let current: String = r.get(0)?;
                Ok(Leadership {
                    is_leader: current == holder,
                    holder: current,
                    expires_at: from_micros(r.get(1)?)?,
                })
            })
            .optional()
        })
        .map_err(|e| classify(&format!("reading leadership of {name:?}"), e))
}

/// Who holds `name`, if anyone.
pub(crate) fn leader_get(
    conn: &Connection,
    name: &str,
    holder: &str,
) -> Result<Option<Leadership>, StoreError> {
    leadership(conn, name, holder)
}

/// Takes the row when it is free, expired or already ours.
pub(crate) fn leader_attempt_elect(
    conn: &Connection,
    p: LeaderElectParams,
) -> Result<Leadership, StoreError> {
    let expires = rota_core::add_duration(p.now, p.ttl);
    conn.prepare_cached(
        "INSERT INTO leader (name, holder, elected_at, expires_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET \
           holder = excluded.holder, \
           elected_at = CASE WHEN leader.holder = excluded.holder THEN leader.elected_at ELSE excluded.elected_at END, \
           expires_at = excluded.expires_at \
         WHERE leader.holder = excluded.holder OR leader.expires_at <= excluded.elected_at",
    )
    .and_then(|mut stmt| stmt.execute(params![p.name, p.holder, micros(p.now), micros(expires)]))
    .map_err(|e| classify(&format!("electing a leader of {:?}", p.name), e))?;
    Ok(leadership(conn, &p.name, &p.holder)?.unwrap_or_else(|| Leadership::nobody(p.now)))
}

/// Extends the row when it is still ours.
pub(crate) fn leader_renew(
    conn: &Connection,
    p: LeaderRenewParams,
) -> Result<Leadership, StoreError> {
    let expires = rota_core::add_duration(p.now, p.ttl);
    let n = conn
        .prepare_cached(
            "UPDATE leader SET expires_at = ?3 WHERE name = ?1 AND holder = ?2 AND expires_at > ?4",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![p.name, p.holder, micros(expires), micros(p.now)])
        })
        .map_err(|e| classify(&format!("renewing leadership of {:?}", p.name), e))?;
    Ok(match leadership(conn, &p.name, &p.holder)? {
        Some(mut l) => {
            l.is_leader &= n > 0;
            l
        }
        None => Leadership::nobody(p.now),
    })
}

/// Frees the row when it is ours.
pub(crate) fn leader_resign(conn: &Connection, p: LeaderResignParams) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM leader WHERE name = ?1 AND holder = ?2")
        .and_then(|mut stmt| stmt.execute(params![p.name, p.holder]))
        .map_err(|e| classify(&format!("resigning leadership of {:?}", p.name), e))?;
    Ok(())
}
