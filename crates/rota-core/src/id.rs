//! Job identifiers: UUIDv7, so that ids sort by creation time.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's identity: a UUIDv7 whose timestamp is the job's creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh id stamped with `now` (from the injected clock) and random low bits.
    pub fn new(now: Timestamp) -> Self {
        let micros = now.as_microsecond().max(0) as u64;
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            micros / 1_000_000,
            ((micros % 1_000_000) * 1_000) as u32,
        );
        Self(Uuid::new_v7(ts))
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The 16 bytes of the UUID, big-endian (sorting bytes sorts ids).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Rebuilds an id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(bytes))
    }

    /// A stable 64-bit number derived from the id, used to seed per-job jitter.
    pub fn seed(&self) -> u64 {
        let (hi, lo) = self.0.as_u64_pair();
        hi ^ lo.rotate_left(17)
    }
}

impl From<Uuid> for JobId {
    fn from(uuid: Uuid) -> Self {
        Self(uuid)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation_time() {
        let early = JobId::new(Timestamp::from_second(1_000).unwrap());
        let late = JobId::new(Timestamp::from_second(2_000).unwrap());
        assert!(early < late);
        assert_eq!(early.as_uuid().get_version_num(), 7);
        assert_eq!(JobId::from_bytes(*late.as_bytes()), late);
        assert_eq!(late.to_string().parse::<JobId>().unwrap(), late);
    }
}
