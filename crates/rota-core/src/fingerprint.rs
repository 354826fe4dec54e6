//! Error fingerprints: the same failure with different ids, numbers or quoted values gets
//! the same fingerprint, so dead jobs can be grouped by cause.

use std::hash::{Hash, Hasher};

/// Frames of the backtrace that take part in the fingerprint.
pub const FINGERPRINT_FRAMES: usize = 3;

/// The message with its variable parts masked: quoted values become `'?'`/`"?"`, UUIDs
/// `<uuid>`, hex runs of 8 or more (and `0x` literals) `<hex>`, other numbers `<n>`.
pub fn normalize_message(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            if let Some(end) = chars[i + 1..].iter().position(|&d| d == c) {
                out.push(c);
                out.push('?');
                out.push(c);
                i += end + 2;
                continue;
            }
        }
        if c.is_ascii_alphanumeric() && (i == 0 || !chars[i - 1].is_ascii_alphanumeric()) {
            let end = (i..chars.len())
                .find(|&j| !(chars[j].is_ascii_alphanumeric() || chars[j] == '-'))
                .unwrap_or(chars.len());
            let word: String = chars[i..end].iter().collect();
            let hexish = word
                .chars()
                .filter(|c| *c != '-')
                .all(|c| c.is_ascii_hexdigit());
            let digits = word.chars().filter(char::is_ascii_digit).count();
            if word.len() == 36 && word.matches('-').count() == 4 && hexish {
                out.push_str("<uuid>");
                i = end;
                continue;
            }
            if word.starts_with("0x")
                && word.len() > 2
                && word[2..].chars().all(|c| c.is_ascii_hexdigit())
            {
                out.push_str("<hex>");
                i = end;
                continue;
            }
            if hexish && !word.contains('-') && word.len() >= 8 && digits > 0 {
                out.push_str("<hex>");
                i = end;
                continue;
            }
        }
        if c.is_ascii_digit() {
            let end = (i..chars.len())
                .find(|&j| !(chars[j].is_ascii_digit() || chars[j] == '.'))
                .unwrap_or(chars.len());
            out.push_str("<n>");
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// The fingerprint of an error: 16 hex digits from the normalised message and the first
/// [`FINGERPRINT_FRAMES`] non-empty lines of the backtrace (numbers in them masked too, so
/// line numbers and addresses do not split a group).
pub fn fingerprint(message: &str, backtrace: Option<&str>) -> String {
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut hasher = Fnv64::default();
    normalize_message(message).hash(&mut hasher);
    for frame in backtrace
        .unwrap_or("")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(FINGERPRINT_FRAMES)
    {
        normalize_message(frame).hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_parts_are_masked() {
        assert_eq!(
            normalize_message("user 4821 not found in 'eu-west' (request 0193a7c2-5b1e-7d3f-9a10-3c4d5e6f7a8b, addr 0x7ffe12, sha deadbeef01)"),
            "user <n> not found in '?' (request <uuid>, addr <hex>, sha <hex>)"
        );
    }

    #[test]
    fn the_same_failure_with_other_values_has_one_fingerprint() {
        let a = fingerprint(
            "timeout after 30s talking to 10.0.0.7:5432",
            Some("at db.rs:41\nat main.rs:7"),
        );
        let b = fingerprint(
            "timeout after 31s talking to 10.0.0.9:5432",
            Some("at db.rs:44\nat main.rs:9"),
        );
        let c = fingerprint("connection refused", Some("at db.rs:41\nat main.rs:7"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
    }
}
