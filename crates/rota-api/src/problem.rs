//! RFC 9457 problem details: the body of every error response.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error, as `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`about:blank` when the code says it all).
    #[serde(rename = "type", default = "about_blank")]
    pub type_uri: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case, naming the field and the fix where there is one.
    pub detail: String,
    /// A stable machine-readable code, such as `queue_not_declared`.
    pub code: String,
    /// The offending field, when the problem is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before trying again (also sent as `Retry-After`), when the answer is
    /// "not now" (429 `queue_full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Problem {
    /// A problem with `status`, stable `code` and human `detail`.
    pub fn new(status: u16, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: about_blank(),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            code: code.to_owned(),
            field: None,
            retry_after: None,
        }
    }

    /// The same problem, telling the client to come back after `seconds`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The same problem, naming `field`.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}
