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
    /// A fresh id stamped with `now` (from the injected clock): 48 bits of Unix
    /// milliseconds, the sub-millisecond fraction in the 12 `rand_a` bits (RFC 9562,
    /// method 3), then 62 random bits. Within a process ids strictly increase: an id made at
    /// the same instant as (or, if the clock went back, earlier than) the previous one is
    /// the previous one plus one, so jobs enqueued together keep their order.
    pub fn new(now: Timestamp) -> Self {
        use std::sync::Mutex;
        static LAST: Mutex<u128> = Mutex::new(0);

        let micros = now.as_microsecond().max(0) as u64;
        let stamp = u128::from(micros / 1_000) << 12 | u128::from((micros % 1_000) * 4096 / 1_000);
        let fresh = stamp << 62 | u128::from(random_u64() >> 2);
        let value = {
            let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
            *last = if fresh > *last { fresh } else { *last + 1 };
            *last
        };
        // value = 48 bits ms | 12 bits fraction | 62 bits random; interleave version 7 and
        // the RFC 4122 variant.
        let ms = (value >> 74) as u64;
        let fraction = ((value >> 62) & 0xfff) as u16;
        let random = (value & ((1 << 62) - 1)) as u64;
        let mut bytes = [0u8; 16];
        bytes[0..6].copy_from_slice(&ms.to_be_bytes()[2..8]);
        bytes[6] = 0x70 | (fraction >> 8) as u8;
        bytes[7] = fraction as u8;
        bytes[8..16].copy_from_slice(&(random | 0x8000_0000_0000_0000).to_be_bytes());
        Self(Uuid::from_bytes(bytes))
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

/// Random bits for ids without a system call per id: a per-thread SplitMix64 stream whose
/// seed comes from the standard library's per-process random hasher keys (drawn from the
/// operating system once), mixed with the thread's identity.
fn random_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, Hasher};

    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            std::hash::Hash::hash(&std::thread::current().id(), &mut hasher);
            hasher.finish()
        });
    }
    STATE.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
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
        assert_eq!(early.as_uuid().get_variant(), uuid::Variant::RFC4122);
        assert_eq!(JobId::from_bytes(*late.as_bytes()), late);
        assert_eq!(late.to_string().parse::<JobId>().unwrap(), late);
    }

    #[test]
    fn ids_sort_to_the_microsecond_and_never_collide() {
        let base = Timestamp::from_second(1_767_225_600).unwrap();
        let a = JobId::new(
            base.checked_add(jiff::SignedDuration::from_micros(10))
                .unwrap(),
        );
        let b = JobId::new(
            base.checked_add(jiff::SignedDuration::from_micros(250))
                .unwrap(),
        );
        assert!(a < b, "same millisecond, later microsecond sorts later");
        let ids: Vec<_> = (0..100_000).map(|_| JobId::new(base)).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "same instant: strictly increasing"
        );
        assert_eq!(
            ids[0].as_uuid().get_timestamp().unwrap().to_unix().0,
            1_767_225_600
        );
        assert_eq!(a.as_uuid().get_variant(), uuid::Variant::RFC4122);
    }
}
