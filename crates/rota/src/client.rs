//! The HTTP client.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rota_api::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with a problem.
    #[error("{} ({}): {}", .0.title, .0.code, .0.detail)]
    Api(Box<Problem>),
    /// The server could not be reached or the exchange failed.
    #[error("cannot reach rota at {url}: {reason}")]
    Transport {
        /// The server's base URL.
        url: String,
        /// Why, in a few words: the innermost cause (`Connection refused (os error 111)`).
        reason: String,
        /// The cause. (Not the error's `source`: its chain repeats the URL and adds nothing
        /// a person needs; `reason` is its last link.)
        cause: reqwest::Error,
    },
    /// The answer was not what the API documents.
    #[error("unexpected answer from rota ({status}): {detail}")]
    Protocol {
        /// The HTTP status.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// The base URL is not usable.
    #[error("invalid server URL {0:?}: expected something like http://127.0.0.1:7700")]
    Url(String),
    /// A job's arguments could not be serialized as JSON.
    #[error("the arguments of a {kind} job do not serialize as JSON")]
    Args {
        /// The job's kind.
        kind: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// A transport failure talking to `url`, with its innermost cause as the reason.
    fn transport(url: &str, cause: reqwest::Error) -> Self {
        let reason = if cause.is_timeout() {
            "no answer in time (is it overloaded, or is something between dropping the request?)"
                .to_owned()
        } else {
            let mut last: &dyn std::error::Error = &cause;
            while let Some(next) = last.source() {
                last = next;
            }
            let reason = last.to_string();
            if cause.is_connect() {
                format!("{reason}: is `rota serve` running there? (the URL is --url or ROTA_URL)")
            } else {
                reason
            }
        };
        ClientError::Transport {
            url: url.to_owned(),
            reason,
            cause,
        }
    }
}

/// The stable problem codes a client acts on; any other is [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// `invalid_field`, `invalid_body`, `malformed_json`, `invalid_path`, `invalid_query`:
    /// the request is wrong; the problem names the field.
    Invalid,
    /// `job_not_found` and other `*_not_found`.
    NotFound,
    /// `queue_not_declared`: declare the queue first (or fix its spelling).
    QueueNotDeclared,
    /// `queue_full`: the queue's backpressure refused the job; retry after the problem's
    /// `retry_after`.
    QueueFull,
    /// `lease_lost`: the job was taken over after its lease expired.
    LeaseLost,
    /// `conflict`: the job is not in a state that allows this.
    Conflict,
    /// `busy` or `unavailable`: retry shortly.
    Unavailable,
    /// `unauthorized` or `forbidden`: the token is missing or lacks the scope.
    Unauthorized,
    /// `payload_too_large`: the body exceeds the server's limit.
    PayloadTooLarge,
    /// Any other code.
    Other(String),
}

impl ErrorCode {
    /// The code's meaning.
    pub fn of(code: &str) -> Self {
        match code {
            "invalid_field"
            | "invalid_body"
            | "malformed_json"
            | "invalid_path"
            | "invalid_query"
            | "unsupported_media_type" => ErrorCode::Invalid,
            "queue_not_declared" => ErrorCode::QueueNotDeclared,
            "queue_full" => ErrorCode::QueueFull,
            "lease_lost" => ErrorCode::LeaseLost,
            "conflict" => ErrorCode::Conflict,
            "busy" | "unavailable" | "storage_full" => ErrorCode::Unavailable,
            "unauthorized" | "forbidden" => ErrorCode::Unauthorized,
            "payload_too_large" => ErrorCode::PayloadTooLarge,
            code if code.ends_with("not_found") => ErrorCode::NotFound,
            code => ErrorCode::Other(code.to_owned()),
        }
    }
}

impl ClientError {
    /// The problem's stable code, when the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api(p) => Some(&p.code),
            _ => None,
        }
    }

    /// What the server's problem code means, when it answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.code().map(ErrorCode::of)
    }
}

/// A client for one Rota server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    /// A client for the server at `base_url`, such as `http://127.0.0.1:7700`.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        let base = base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Url(base_url.to_owned()));
        }
        let http = reqwest::Client::builder()
            // Long polls hold a request for up to 60 s.
            .timeout(Duration::from_secs(90))
            // Let go of idle connections before the server does (its `header_timeout`,
            // 30 s by default), so a request never races the server closing one.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .map_err(|cause| ClientError::transport(&base, cause))?;
        Ok(Self {
            base,
            http,
            token: None,
        })
    }

    /// Sends `token` as a bearer token on every call.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |cause| ClientError::transport(&self.base, cause);
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
                status: status.as_u16(),
                detail: e.to_string(),
            });
        }
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(problem) => Err(ClientError::Api(Box::new(problem))),
            Err(_) => Err(ClientError::Protocol {
                status: status.as_u16(),
                detail: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            }),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<(), T>(Method::GET, path, None).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// Enqueues one job as the wire request says ([`Client::enqueue`] for typed jobs).
    pub async fn enqueue_request(&self, job: &NewJobRequest) -> Result<Enqueued, ClientError> {
        self.post("/v1/jobs", job).await
    }

    /// Enqueues many jobs as the wire request says, all or nothing.
    pub async fn enqueue_many_requests(
        &self,
        jobs: &EnqueueManyRequest,
    ) -> Result<EnqueueManyResponse, ClientError> {
        match self.post("/v1/jobs/batch", jobs).await? {
            EnqueueManyAnswer::Jobs(jobs) => Ok(jobs),
            EnqueueManyAnswer::Ids(_) => Err(ClientError::Protocol {
                status: 200,
                detail: "asked for the jobs, got only their ids".into(),
            }),
        }
    }

    /// Enqueues many jobs (all or none), answering only their ids, in order: a fraction of
    /// the bytes of [`Client::enqueue_many`].
    pub async fn enqueue_many_ids(
        &self,
        jobs: &EnqueueManyRequest,
    ) -> Result<EnqueuedIds, ClientError> {
        self.post("/v1/jobs/batch?return=ids", jobs).await
    }

    /// One job.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        self.get(&format!("/v1/jobs/{}", encode(id))).await
    }

    /// One job, waiting up to `wait` (such as `30s`) for it to finish.
    pub async fn job_wait(&self, id: &str, wait: &str) -> Result<JobView, ClientError> {
        self.get(&format!("/v1/jobs/{}?wait={}", encode(id), encode(wait)))
            .await
    }

    /// Jobs matching `query` (`queue`, `kind`, `state`, `tag`, `after`, `limit` pairs).
    pub async fn jobs(&self, query: &[(&str, String)]) -> Result<JobPageView, ClientError> {
        self.get(&format!("/v1/jobs{}", query_string(query))).await
    }

    /// Dead jobs matching `query`.
    pub async fn dead(&self, query: &[(&str, String)]) -> Result<JobPageView, ClientError> {
        self.get(&format!("/v1/dead{}", query_string(query))).await
    }

    /// Cancels a job.
    pub async fn cancel(&self, id: &str) -> Result<JobView, ClientError> {
        self.post(
            &format!("/v1/jobs/{}/cancel", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Retries a dead or cancelled job.
    pub async fn retry(&self, id: &str) -> Result<JobView, ClientError> {
        self.post(
            &format!("/v1/jobs/{}/retry", encode(id)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Retries dead jobs by id or filter.
    pub async fn retry_dead(&self, selection: &JobSelection) -> Result<ItemOutcomes, ClientError> {
        self.post("/v1/dead/retry", selection).await
    }

    /// Dead jobs grouped by cause, largest group first.
    pub async fn dead_groups(&self) -> Result<ErrorGroupList, ClientError> {
        self.get("/v1/dead/groups").await
    }

    /// Deletes dead jobs by id or filter; returns how many went.
    pub async fn purge_dead(&self, selection: &JobSelection) -> Result<Count, ClientError> {
        self.post("/v1/dead/purge", selection).await
    }

    /// Leases jobs, waiting as the request says.
    pub async fn fetch(&self, request: &FetchRequest) -> Result<FetchResponse, ClientError> {
        self.post("/v1/fetch", request).await
    }

    /// Extends leases.
    pub async fn heartbeat(
        &self,
        request: &HeartbeatRequest,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.post("/v1/heartbeat", request).await
    }

    /// Records successful attempts.
    pub async fn complete(&self, request: &CompleteRequest) -> Result<ItemOutcomes, ClientError> {
        self.post("/v1/complete", request).await
    }

    /// Records successful attempts and leases the next jobs, in one request (one transaction
    /// on SQLite). A fetch that failed after the completions were recorded is in
    /// `fetch_error`.
    pub async fn complete_and_fetch(
        &self,
        request: &CompleteAndFetchRequest,
    ) -> Result<CompleteAndFetchResponse, ClientError> {
        self.post("/v1/complete-and-fetch", request).await
    }

    /// Records failed attempts (or snoozes).
    pub async fn fail(&self, request: &FailRequest) -> Result<ItemOutcomes, ClientError> {
        self.post("/v1/fail", request).await
    }

    /// Gives leases back unrun.
    pub async fn hand_back(&self, request: &HandBackRequest) -> Result<ItemOutcomes, ClientError> {
        self.post("/v1/hand-back", request).await
    }

    /// Reports progress on a running job.
    pub async fn progress(
        &self,
        id: &str,
        request: &ProgressRequest,
    ) -> Result<JobView, ClientError> {
        self.post(&format!("/v1/jobs/{}/progress", encode(id)), request)
            .await
    }

    /// Saves a running job's checkpoint (with its lease token).
    pub async fn checkpoint(
        &self,
        id: &str,
        request: &CheckpointRequest,
    ) -> Result<JobView, ClientError> {
        self.post(&format!("/v1/jobs/{}/checkpoint", encode(id)), request)
            .await
    }

    /// Every queue with its counts.
    pub async fn queues(&self) -> Result<QueueList, ClientError> {
        self.get("/v1/queues").await
    }

    /// One queue with its counts.
    pub async fn queue(&self, name: &str) -> Result<QueueView, ClientError> {
        self.get(&format!("/v1/queues/{}", encode(name))).await
    }

    /// Declares a queue or updates it.
    pub async fn declare_queue(
        &self,
        name: &str,
        request: &QueueDeclareRequest,
    ) -> Result<QueueView, ClientError> {
        self.call(
            Method::PUT,
            &format!("/v1/queues/{}", encode(name)),
            Some(request),
        )
        .await
    }

    /// Pauses a queue.
    pub async fn pause_queue(&self, name: &str) -> Result<QueueView, ClientError> {
        self.post(
            &format!("/v1/queues/{}/pause", encode(name)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Resumes a queue.
    pub async fn resume_queue(&self, name: &str) -> Result<QueueView, ClientError> {
        self.post(
            &format!("/v1/queues/{}/resume", encode(name)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Every schedule.
    pub async fn schedules(&self) -> Result<ScheduleList, ClientError> {
        self.get("/v1/schedules").await
    }

    /// One schedule.
    pub async fn schedule(&self, name: &str) -> Result<ScheduleView, ClientError> {
        self.get(&format!("/v1/schedules/{}", encode(name))).await
    }

    /// Creates or replaces a schedule.
    pub async fn create_schedule(
        &self,
        request: &ScheduleRequest,
    ) -> Result<ScheduleView, ClientError> {
        self.post("/v1/schedules", request).await
    }

    /// Deletes a schedule.
    pub async fn delete_schedule(&self, name: &str) -> Result<Count, ClientError> {
        self.call::<(), Count>(
            Method::DELETE,
            &format!("/v1/schedules/{}", encode(name)),
            None,
        )
        .await
    }

    /// Pauses, resumes or triggers a schedule (`action` is `pause`, `resume` or `trigger`).
    pub async fn schedule_action<T: DeserializeOwned>(
        &self,
        name: &str,
        action: &str,
    ) -> Result<T, ClientError> {
        self.post(
            &format!("/v1/schedules/{}/{action}", encode(name)),
            &serde_json::json!({}),
        )
        .await
    }

    /// Every known worker.
    pub async fn workers(&self) -> Result<WorkerList, ClientError> {
        self.get("/v1/workers").await
    }

    /// Every doctor check.
    pub async fn doctor(&self) -> Result<DoctorReport, ClientError> {
        self.get("/v1/doctor").await
    }

    /// Readiness: the report, and whether the server answered 200.
    pub async fn ready(&self) -> Result<(bool, ReadyReport), ClientError> {
        let transport = |cause| ClientError::transport(&self.base, cause);
        let response = self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .map_err(transport)?;
        let ok = response.status().is_success();
        let report = response.json().await.map_err(transport)?;
        Ok((ok, report))
    }

    /// Liveness: `GET /healthz` (the cheapest round trip to the server).
    pub async fn healthz(&self) -> Result<(), ClientError> {
        let _: serde_json::Value = self.get("/healthz").await?;
        Ok(())
    }

    /// Whether the server answers at all (any HTTP answer counts).
    pub async fn reachable(&self) -> bool {
        matches!(self.http.get(format!("{}/v1/queues", self.base)).send().await, Ok(r) if r.status() != StatusCode::BAD_GATEWAY)
    }
}

/// Percent-encodes a path segment or query value.
fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn query_string(query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    format!("?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_and_query_values_are_encoded() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(
            query_string(&[("queue", "x y".into()), ("limit", "5".into())]),
            "?queue=x%20y&limit=5"
        );
    }

    #[test]
    fn a_url_without_a_scheme_is_refused() {
        assert!(matches!(
            Client::new("127.0.0.1:7700"),
            Err(ClientError::Url(_))
        ));
    }
}
