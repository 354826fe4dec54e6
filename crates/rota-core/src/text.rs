//! The one rule about the text Rota stores: no NUL character (U+0000).
//!
//! PostgreSQL cannot store NUL in `text` or `jsonb`, and both backends accept the same
//! input, so a NUL is refused where it is data (arguments, results, keys, tags, names) and
//! replaced by U+FFFD where it is prose a human reads (an error message, a backtrace, a
//! progress message): a worker's report of a failure is never lost to a stray byte a program
//! wrote to its stderr.

use std::borrow::Cow;

use serde_json::Value;

use crate::ValidationError;

/// What replaces a NUL in prose.
pub const REPLACEMENT: char = '\u{FFFD}';

/// The error for a NUL in data at `field`.
pub fn nul_refused(field: &str) -> ValidationError {
    ValidationError::new(
        field,
        "contains a NUL character (\\u0000), which Rota does not store (PostgreSQL cannot): \
         remove it, or encode binary data (base64)",
    )
}

/// Refuses `text` at `field` if it holds a NUL.
pub fn refuse_nul(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.contains('\0') {
        return Err(nul_refused(field));
    }
    Ok(())
}

/// `text` with every NUL replaced by [`REPLACEMENT`].
pub fn scrub_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', &REPLACEMENT.to_string()))
    } else {
        Cow::Borrowed(text)
    }
}

/// Refuses a JSON `value` at `field` if any string or key in it holds a NUL, naming where
/// (`args.items[2]`, or `field` itself). The same walk as a request's, with no prose: a
/// copy of the value is walked, since nothing in it is changed.
pub fn refuse_nul_in_json(field: &str, value: &Value) -> Result<(), ValidationError> {
    clean(&mut value.clone(), field, field, &[])
}

/// Whether the JSON text `bytes` may encode a NUL (it holds an escape `\u0000`): a scan
/// cheap enough for every request body, so that only bodies that do are parsed again.
pub fn json_may_hold_nul(bytes: &[u8]) -> bool {
    let mut at = 0;
    while let Some(offset) = bytes[at..].iter().position(|&b| b == b'\\') {
        let start = at + offset;
        let end = bytes[start..]
            .iter()
            .position(|&b| b != b'\\')
            .map_or(bytes.len(), |n| start + n);
        // An odd run of backslashes escapes what follows it.
        if (end - start) % 2 == 1 && bytes[end..].starts_with(b"u0000") {
            return true;
        }
        at = end;
    }
    false
}

/// Cleans a request body: NULs in strings at the `prose` paths (such as
/// `failures[].message`, `[]` standing for any index) are replaced, and a NUL anywhere else
/// is refused, naming its path.
pub fn clean_nul_in_request(value: &mut Value, prose: &[&str]) -> Result<(), ValidationError> {
    clean(value, "", "", prose)
}

fn clean(
    value: &mut Value,
    path: &str,
    shape: &str,
    prose: &[&str],
) -> Result<(), ValidationError> {
    match value {
        Value::String(s) if s.contains('\0') => {
            if prose.contains(&shape) {
                *s = scrub_nul(s).into_owned();
                Ok(())
            } else {
                Err(nul_refused(if path.is_empty() { "body" } else { path }))
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .try_for_each(|(i, v)| clean(v, &format!("{path}[{i}]"), &format!("{shape}[]"), prose)),
        Value::Object(map) => map.iter_mut().try_for_each(|(k, v)| {
            let at = join(path, k);
            if k.contains('\0') {
                return Err(nul_refused(&at));
            }
            clean(v, &at, &join(shape, k), prose)
        }),
        _ => Ok(()),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_an_unescaped_nul_escape_is_seen() {
        assert!(json_may_hold_nul(br#"{"a":"x\u0000"}"#));
        assert!(json_may_hold_nul(br#"{"a":"\\\u0000"}"#));
        // An escaped backslash followed by the letters u0000 is text, not a NUL.
        assert!(!json_may_hold_nul(br#"{"a":"\\u0000"}"#));
        assert!(!json_may_hold_nul(br#"{"a":"\u0001 \n \\"}"#));
        assert!(!json_may_hold_nul(b"\\"));
    }

    #[test]
    fn prose_is_scrubbed_and_data_is_refused_by_path() {
        let prose = ["failures[].message", "failures[].backtrace"];
        let mut body = json!({"failures": [{"message": "boom\u{0}", "backtrace": "a\u{0}b"}]});
        clean_nul_in_request(&mut body, &prose).unwrap();
        assert_eq!(body["failures"][0]["message"], "boom\u{FFFD}");
        assert_eq!(body["failures"][0]["backtrace"], "a\u{FFFD}b");

        // A `message` inside args is data: refused, not changed.
        let mut body = json!({"args": {"message": "x\u{0}"}, "tags": ["ok"]});
        let err = clean_nul_in_request(&mut body, &prose).unwrap_err();
        assert_eq!(err.field, "args.message");
        let mut body = json!({"tags": ["ok", "bad\u{0}"]});
        assert_eq!(
            clean_nul_in_request(&mut body, &prose).unwrap_err().field,
            "tags[1]"
        );
        let mut body = json!({"args": {"k\u{0}": 1}});
        assert_eq!(
            clean_nul_in_request(&mut body, &prose).unwrap_err().field,
            "args.k\u{0}"
        );
    }

    #[test]
    fn refuse_nul_in_json_names_the_path() {
        let value = json!({"items": [1, "ok", {"deep": "x\u{0}"}]});
        let err = refuse_nul_in_json("args", &value).unwrap_err();
        assert_eq!(err.field, "args.items[2].deep");
        assert_eq!(refuse_nul_in_json("args", &json!({"a": "b"})), Ok(()));
        assert!(refuse_nul("name", "a\u{0}").is_err());
        assert_eq!(scrub_nul("plain"), Cow::Borrowed("plain"));
    }
}
