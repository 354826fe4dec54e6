//! Issue 13: the dashboard against a real `rota serve` on loopback, over real HTTP and in a
//! real headless Chromium.
//!
//! HTTP level: a cross-site (or CSRF-less) POST to every action is refused and changes
//! nothing; a GET never changes anything; every page carries the Content-Security-Policy;
//! `<img src=x onerror=alert(1)>` in every field a client can set comes back escaped on
//! every page (and live frame) that shows it. In the browser: see
//! `browser/dashboard_browser.py`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::*;

const XSS: &str = "<img src=x onerror=alert(1)>";
const XSS_ESCAPED: &str = "&#60;img src=x onerror=alert(1)&#62;";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

struct Dash {
    server: Server,
    admin: String,
    read: String,
    http: reqwest::Client,
}

impl Dash {
    fn start() -> Self {
        let (admin, admin_entry) = new_token("ops", "admin");
        let (read, read_entry) = new_token("viewer", "read");
        let server = Server::start(&format!("{admin_entry}\n{read_entry}\n"));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            server,
            admin,
            read,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self
            .http
            .request(method.clone(), self.url(path))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A page as `token`'s session.
    async fn page(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("cookie", format!("rota_session={token}"))
            .send()
            .await
            .unwrap()
    }

    /// The CSRF token the pages give `token`'s session.
    async fn csrf(&self, token: &str) -> String {
        let html = self.page(token, "/jobs").await.text().await.unwrap();
        let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        html[at..at + 64].to_owned()
    }

    /// A form POST as `token`'s session with extra headers.
    async fn post(
        &self,
        token: &str,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(self.url(path))
            .header("cookie", format!("rota_session={token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded_pairs(form));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send().await.unwrap()
    }

    /// A job as the API shows it.
    async fn job(&self, id: &str) -> Value {
        self.api(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
            .await
    }

    /// A bulk action from the admin's session, same-origin, with its CSRF token.
    async fn bulk(&self, csrf: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let mut form = vec![("csrf", csrf)];
        form.extend_from_slice(fields);
        self.post(
            &self.admin,
            "/jobs/bulk",
            &form,
            &[("sec-fetch-site", "same-origin")],
        )
        .await
    }

    /// A form POST without a session.
    async fn anonymous_post(&self, path: &str, body: impl Into<String>) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.into())
            .send()
            .await
            .unwrap()
    }

    /// Everything an action could change: each job's state, each queue's pause, each
    /// schedule's enablement and run count.
    async fn everything(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        let jobs = self
            .api(reqwest::Method::GET, "/v1/jobs?limit=1000", None)
            .await;
        for j in jobs["jobs"].as_array().unwrap() {
            all.insert(
                format!("job {}", j["id"]),
                format!("{} {}", j["state"], j["attempt"]),
            );
        }
        let queues = self.api(reqwest::Method::GET, "/v1/queues", None).await;
        for q in queues["queues"].as_array().unwrap() {
            all.insert(format!("queue {}", q["name"]), q["paused"].to_string());
        }
        let schedules = self.api(reqwest::Method::GET, "/v1/schedules", None).await;
        for s in schedules["schedules"].as_array().unwrap() {
            all.insert(
                format!("schedule {}", s["name"]),
                format!("{} {}", s["enabled"], s["fired"]),
            );
        }
        all
    }

    /// Jobs in every state worth acting on, a paused and a running queue, a schedule, a
    /// worker; the attacker's payload in every free-text field a client can set.
    async fn seed(&self) -> Seeded {
        use reqwest::Method;
        self.api(Method::PUT, "/v1/queues/mail", Some(json!({})))
            .await;
        self.api(Method::PUT, "/v1/queues/idle", Some(json!({})))
            .await;
        self.api(Method::POST, "/v1/queues/idle/pause", None).await;
        self.api(
            Method::POST,
            "/v1/schedules",
            Some(
                json!({"name": "nightly", "cron": "0 3 * * *", "queue": "mail", "kind": "digest",
                        "args": {"note": XSS}}),
            ),
        )
        .await;
        let mut ids = Vec::new();
        for i in 0..4 {
            let job = self
                .api(
                    Method::POST,
                    "/v1/jobs",
                    Some(
                        json!({"queue": "mail", "kind": "send", "args": {"body": XSS, "n": i},
                                "tags": [XSS], "max_attempts": 1,
                                "concurrency_key": format!("k{i}{XSS}")}),
                    ),
                )
                .await;
            ids.push(job["job"]["id"].as_str().unwrap().to_owned());
        }
        let fetched = self
            .api(
                Method::POST,
                "/v1/fetch",
                Some(
                    json!({"worker": "w1", "name": XSS, "host": XSS, "queues": ["mail"], "max": 2}),
                ),
            )
            .await;
        let fetched = fetched["jobs"].as_array().unwrap().clone();
        // One dies with the payload in its error and backtrace; one runs, with progress.
        self.api(
            Method::POST,
            "/v1/fail",
            Some(json!({"failures": [{"job": fetched[0]["id"], "token": fetched[0]["lease_token"],
                                      "message": format!("boom {XSS}"), "backtrace": format!("at {XSS}")}]})),
        )
        .await;
        let running = fetched[1]["id"].as_str().unwrap().to_owned();
        self.api(
            Method::POST,
            &format!("/v1/jobs/{running}/progress"),
            Some(json!({"token": fetched[1]["lease_token"], "percent": 30, "message": XSS})),
        )
        .await;
        let dead = fetched[0]["id"].as_str().unwrap().to_owned();
        let available: Vec<String> = ids
            .iter()
            .filter(|id| **id != dead && **id != running)
            .cloned()
            .collect();
        let groups = self.api(Method::GET, "/v1/dead/groups", None).await;
        let group = groups["groups"][0]["group"].as_str().unwrap().to_owned();
        Seeded {
            dead,
            running,
            available,
            group,
        }
    }
}

/// A form, its headers, and why it must be refused.
type Attempt<'a> = (Vec<(&'a str, String)>, Vec<(&'a str, &'a str)>, &'a str);

struct Seeded {
    dead: String,
    running: String,
    available: Vec<String>,
    group: String,
}

fn serde_urlencoded_pairs(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every page: the CSP and the other hardening headers, and the payload escaped wherever it
/// shows (never raw), including the live frames and filter values echoed from the URL.
/// Names that cannot carry it (queues, kinds) are refused by the API.
#[tokio::test(flavor = "multi_thread")]
async fn every_page_has_the_csp_and_shows_attacker_data_escaped() {
    let dash = Dash::start();
    let seeded = dash.seed().await;
    for (path, body) in [
        ("/v1/jobs", json!({"queue": "mail", "kind": XSS})),
        ("/v1/jobs", json!({"queue": XSS, "kind": "send"})),
    ] {
        let status = dash
            .http
            .post(dash.url(path))
            .bearer_auth(&dash.admin)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 422, "{body}");
    }
    // Wait for the diagnostics snapshot to see the seeded jobs.
    eventually(
        std::time::Duration::from_secs(10),
        "the overview to count the dead job",
        async || {
            let html = dash.page(&dash.admin, "/").await.text().await.unwrap();
            html.contains(r#"data-count="dead">1<"#).then_some(())
        },
    )
    .await;
    let xss = encode(XSS);
    let pages: Vec<(String, bool)> = vec![
        ("/".into(), true),
        ("/jobs".into(), true),
        ("/jobs?state=dead".into(), true),
        (format!("/jobs/{}", seeded.dead), true),
        (format!("/jobs/{}", seeded.running), true),
        (format!("/jobs/{}/raw/args", seeded.dead), false),
        ("/errors".into(), true),
        (format!("/errors?group={}", seeded.group), true),
        ("/queues".into(), false),
        ("/schedules".into(), false),
        ("/workers".into(), true),
        (
            format!("/jobs?queue={xss}&kind={xss}&tag={xss}&group={xss}&from={xss}"),
            true,
        ),
        (format!("/jobs?state={xss}"), true),
        ("/login".into(), false),
        (format!("/login?next={xss}"), false),
    ];
    for (path, shows_payload) in pages {
        let response = dash.page(&dash.admin, &path).await;
        let headers = response.headers().clone();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            status == 200 || status == 422,
            "{path}: {status} {}",
            &body[..body.len().min(500)]
        );
        assert_eq!(
            headers.get("content-security-policy").unwrap(),
            CSP,
            "{path}"
        );
        assert_eq!(headers.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(headers.get("x-frame-options").unwrap(), "DENY");
        if path.contains("/raw/") {
            // Raw JSON as plain text: never rendered as HTML.
            assert!(headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"));
            assert!(body.contains(XSS));
            continue;
        }
        assert!(!body.contains("<img src=x"), "{path} shows the payload raw");
        assert!(!body.contains("onerror=alert(1)>"), "{path}");
        if shows_payload {
            assert!(
                body.contains(XSS_ESCAPED) || body.contains("&#60;img"),
                "{path} does not show the payload at all: {}",
                &body[..body.len().min(3000)]
            );
        }
    }
    // Each free-text field reaches a page escaped: args, tags, key, error, backtrace,
    // progress message, worker name and host.
    let job = dash
        .page(&dash.admin, &format!("/jobs/{}", seeded.dead))
        .await
        .text()
        .await
        .unwrap();
    for shown in [
        format!("boom {XSS_ESCAPED}"),
        format!("at {XSS_ESCAPED}"),
        format!("k0{XSS_ESCAPED}"),
    ] {
        assert!(job.contains(&shown), "the job page lacks {shown}");
    }
    let running = dash
        .page(&dash.admin, &format!("/jobs/{}", seeded.running))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        running.contains(&format!("30% {XSS_ESCAPED}")),
        "progress message"
    );
    let workers = dash
        .page(&dash.admin, "/workers")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        workers.matches(XSS_ESCAPED).count(),
        2,
        "worker name and host"
    );
    // The live frame carries the same escaped markup.
    let mut events = dash.page(&dash.admin, "/events").await;
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-security-policy"], CSP);
    let mut text = String::new();
    while !text.contains("\n\n") || !text.contains("event: frame") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), events.chunk())
            .await
            .expect("a live frame within 10 s")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: ").filter(|d| d.starts_with('{')))
        .expect("a frame's data");
    let frame: BTreeMap<String, String> = serde_json::from_str(data).unwrap();
    assert!(
        frame["groups"].contains(&format!("boom {XSS_ESCAPED}")),
        "{frame:?}"
    );
    assert!(frame.values().all(|html| !html.contains("<img src=x")));
    let _ = seeded.available;
}

/// Every action, sent cross-site (by fetch metadata or by origin) or without the CSRF
/// token, with an admin's session cookie: refused with 403, and nothing changes. Then the
/// same action from the dashboard's own origin with the token goes through.
#[tokio::test(flavor = "multi_thread")]
async fn cross_site_and_csrf_less_posts_change_nothing() {
    let dash = Dash::start();
    let seeded = dash.seed().await;
    let csrf = dash.csrf(&dash.admin).await;
    let one = seeded.available[0].clone();
    let actions: Vec<(String, Vec<(&str, String)>)> = vec![
        (format!("/jobs/{one}/retry"), vec![]),
        (format!("/jobs/{one}/cancel"), vec![]),
        (format!("/jobs/{one}/delete"), vec![]),
        (format!("/jobs/{}/retry", seeded.dead), vec![]),
        (format!("/jobs/{}/cancel", seeded.running), vec![]),
        (
            "/jobs/bulk".into(),
            vec![("action", "cancel".into()), ("ids", one.clone())],
        ),
        (
            "/jobs/bulk".into(),
            vec![("action", "delete".into()), ("all", "1".into())],
        ),
        (
            "/jobs/bulk".into(),
            vec![
                ("action", "retry".into()),
                ("all", "1".into()),
                ("state", "dead".into()),
            ],
        ),
        (
            "/errors/retry".into(),
            vec![("group", seeded.group.clone())],
        ),
        (
            "/errors/purge".into(),
            vec![("group", seeded.group.clone())],
        ),
        ("/queues/mail/pause".into(), vec![]),
        ("/queues/idle/resume".into(), vec![]),
        ("/schedules/nightly/pause".into(), vec![]),
        ("/schedules/nightly/trigger".into(), vec![]),
        ("/logout".into(), vec![]),
    ];
    let before = dash.everything().await;
    let with_csrf = |extra: &[(&'static str, String)]| {
        let mut form: Vec<(&str, String)> = extra.to_vec();
        form.push(("csrf", csrf.clone()));
        form
    };
    for (path, fields) in &actions {
        let attempts: Vec<Attempt<'_>> = vec![
            (
                with_csrf(fields),
                vec![("sec-fetch-site", "cross-site")],
                "fetch metadata cross-site",
            ),
            (
                with_csrf(fields),
                vec![("sec-fetch-site", "same-site")],
                "fetch metadata same-site",
            ),
            (
                with_csrf(fields),
                vec![("origin", "http://evil.example")],
                "another origin",
            ),
            (
                fields.clone(),
                vec![("sec-fetch-site", "same-origin")],
                "no CSRF token",
            ),
            (
                {
                    let mut f = fields.clone();
                    f.push(("csrf", "0".repeat(64)));
                    f
                },
                vec![("sec-fetch-site", "same-origin")],
                "a wrong CSRF token",
            ),
        ];
        for (form, headers, why) in attempts {
            if path == "/logout" && why.contains("CSRF") {
                continue; // logging out needs no token: it is only refused cross-site
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = dash.post(&dash.admin, path, &form, &headers).await;
            let status = response.status();
            let set_cookie = response.headers().get("set-cookie").cloned();
            let body = response.text().await.unwrap();
            assert_eq!(status, 403, "{path} with {why}: {status} {body}");
            assert!(set_cookie.is_none(), "{path} with {why} set a cookie");
            assert!(
                body.contains("refused"),
                "{path} with {why} says why: {body}"
            );
        }
    }
    assert_eq!(
        dash.everything().await,
        before,
        "a refused action changed something"
    );
    // The control: the same origin, with the token, acts.
    let response = dash
        .post(
            &dash.admin,
            "/queues/mail/pause",
            &[("csrf", &csrf)],
            &[("sec-fetch-site", "same-origin")],
        )
        .await;
    assert_eq!(response.status(), 303);
    let queue = dash
        .api(reqwest::Method::GET, "/v1/queues/mail", None)
        .await;
    assert_eq!(queue["paused"], true);
    let response = dash
        .post(
            &dash.admin,
            "/errors/retry",
            &[("csrf", &csrf), ("group", &seeded.group)],
            &[("origin", &dash.server.url)],
        )
        .await;
    assert_eq!(
        response.status(),
        303,
        "an Origin of this host is same-origin"
    );
    let job = dash.job(&seeded.dead).await;
    assert_eq!(job["state"], "available");
}

/// GETs never change anything, whatever they are sent to (action paths answer 405).
#[tokio::test(flavor = "multi_thread")]
async fn gets_never_change_anything() {
    let dash = Dash::start();
    let seeded = dash.seed().await;
    let before = dash.everything().await;
    let one = &seeded.available[0];
    let paths = [
        "/".to_owned(),
        "/?window=24h".into(),
        "/?window=7d".into(),
        "/jobs".into(),
        format!("/jobs?state=dead&group={}", seeded.group),
        format!("/jobs/{one}"),
        format!("/jobs/{one}/retry"),
        format!("/jobs/{one}/cancel"),
        format!("/jobs/{one}/delete"),
        "/jobs/bulk?action=delete&all=1".into(),
        "/errors".into(),
        format!("/errors?group={}", seeded.group),
        format!("/errors/purge?group={}", seeded.group),
        format!("/errors/retry?group={}", seeded.group),
        "/queues".into(),
        "/queues/mail/pause".into(),
        "/queues/idle/resume".into(),
        "/schedules".into(),
        "/schedules/nightly/trigger".into(),
        "/schedules/nightly/pause".into(),
        "/workers".into(),
        "/logout".into(),
    ];
    for path in &paths {
        let response = dash.page(&dash.admin, path).await;
        let status = response.status().as_u16();
        assert!(status == 200 || status == 405, "{path}: {status}");
        if path.ends_with("/retry")
            || path.ends_with("/cancel")
            || path.ends_with("/delete")
            || path.ends_with("/pause")
            || path.ends_with("/resume")
            || path.ends_with("/trigger")
            || path.contains("bulk")
            || path.contains("purge?")
            || path.contains("retry?")
            || path == "/logout"
        {
            assert_eq!(status, 405, "{path} must not answer a GET");
        }
    }
    assert_eq!(dash.everything().await, before, "a GET changed something");
}

/// A schedule whose name has a slash, a space, `?`, `#` and non-ASCII is acted on from its
/// page: the forms' paths encode the whole name (a `/` left as it was sent the action to no
/// route, 404).
#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_with_a_slash_in_its_name_is_acted_on_from_its_page() {
    use reqwest::Method;
    let dash = Dash::start();
    dash.api(Method::PUT, "/v1/queues/mail", Some(json!({})))
        .await;
    let name = "reports/daily run?#é";
    dash.api(
        Method::POST,
        "/v1/schedules",
        Some(json!({"name": name, "cron": "0 3 * * *", "queue": "mail", "kind": "digest"})),
    )
    .await;
    let html = dash
        .page(&dash.admin, "/schedules")
        .await
        .text()
        .await
        .unwrap();
    let actions: Vec<&str> = html
        .split("action=\"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .filter(|action| action.starts_with("/schedules/"))
        .collect();
    assert_eq!(actions.len(), 2, "trigger and pause: {actions:?}");
    let csrf = dash.csrf(&dash.admin).await;
    for action in actions {
        let response = dash
            .post(
                &dash.admin,
                action,
                &[("csrf", &csrf)],
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(response.status(), 303, "{action}");
    }
    let schedules = dash.api(Method::GET, "/v1/schedules", None).await;
    let schedule = &schedules["schedules"][0];
    assert_eq!(schedule["name"], name);
    assert_eq!(schedule["enabled"], false, "paused: {schedule}");
    let jobs = dash.api(Method::GET, "/v1/jobs?queue=mail", None).await;
    assert_eq!(jobs["jobs"][0]["schedule"], name, "triggered: {jobs}");
}

/// Without a session the pages send you to log in and the stream refuses; a read token
/// sees every page and no action works for it; the login sets an HttpOnly, SameSite=Strict
/// cookie and refuses unknown tokens.
#[tokio::test(flavor = "multi_thread")]
async fn pages_need_a_token_and_actions_need_admin() {
    let dash = Dash::start();
    let seeded = dash.seed().await;
    let anonymous = dash
        .http
        .get(dash.url("/jobs?state=dead"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        anonymous.headers()["location"],
        "/login?next=%2Fjobs%3Fstate%3Ddead"
    );
    let events = dash.http.get(dash.url("/events")).send().await.unwrap();
    assert_eq!(events.status(), 401);
    let post = dash.anonymous_post("/queues/mail/pause", "csrf=x").await;
    assert_eq!(post.status(), 401, "no session: refused");

    let bad = dash
        .anonymous_post("/login", "token=rota_nope&next=%2F")
        .await;
    assert_eq!(bad.status(), 401);
    assert!(bad
        .text()
        .await
        .unwrap()
        .contains("not one this server accepts"));
    let good = dash
        .anonymous_post("/login", format!("token={}&next=%2Ferrors", dash.read))
        .await;
    assert_eq!(good.status(), 303);
    assert_eq!(good.headers()["location"], "/errors");
    let cookie = good.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.starts_with(&format!("rota_session={};", dash.read)));
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let offsite = dash
        .anonymous_post(
            "/login",
            format!("token={}&next=%2F%2Fevil.example", dash.read),
        )
        .await;
    assert_eq!(
        offsite.headers()["location"],
        "/",
        "never redirected off-site"
    );

    for path in ["/", "/jobs", "/errors", "/queues", "/schedules", "/workers"] {
        let page = dash.page(&dash.read, path).await;
        assert_eq!(page.status(), 200, "{path}");
        let html = page.text().await.unwrap();
        assert!(html.contains("(read-only)"), "{path}");
        for action in [
            "/pause\"",
            "/resume\"",
            "/trigger\"",
            "/retry\"",
            "name=\"ids\"",
        ] {
            assert!(!html.contains(action), "{path} offers {action} to a reader");
        }
    }
    let before = dash.everything().await;
    let csrf = dash.csrf(&dash.read).await;
    for path in [
        "/queues/mail/pause".to_owned(),
        "/schedules/nightly/trigger".into(),
        format!("/jobs/{}/retry", seeded.dead),
        "/errors/purge".into(),
    ] {
        let response = dash
            .post(
                &dash.read,
                &path,
                &[("csrf", &csrf), ("group", &seeded.group)],
                &[("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(response.status(), 403, "{path}");
        assert!(response.text().await.unwrap().contains("admin token"));
    }
    assert_eq!(dash.everything().await, before);
    // The API takes the read token for reads only.
    let api = dash
        .http
        .post(dash.url("/v1/queues/mail/pause"))
        .bearer_auth(&dash.read)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 403);
    let api = dash
        .http
        .get(dash.url("/v1/queues"))
        .bearer_auth(&dash.read)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 200);
}

/// The scenario of `browser/dashboard_browser.py` in headless Chromium (Debian's
/// `chromium` and `chromium-driver`; `.ci/run` installs them), driven with Selenium from a
/// pinned virtual environment. Screenshots go to `target/dashboard-screenshots/`.
#[test]
fn the_dashboard_works_in_a_real_browser() {
    let chromium = std::env::var("ROTA_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let driver =
        std::env::var("ROTA_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    assert!(
        Path::new(&chromium).exists() && Path::new(&driver).exists(),
        "the browser tests need Chromium and its driver: apt-get install chromium chromium-driver (or set ROTA_CHROMIUM and ROTA_CHROMEDRIVER)"
    );
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let python = python_venv("browser-venv", &here.join("browser-requirements.txt"));
    let dash = Dash::start();
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(python)
        .arg(here.join("browser/dashboard_browser.py"))
        .env("ROTA_URL", &dash.server.url)
        .env("ROTA_ADMIN_TOKEN", &dash.admin)
        .env("ROTA_READ_TOKEN", &dash.read)
        .env("ROTA_SHOTS", &shots)
        .env("ROTA_CHROMIUM", &chromium)
        .env("ROTA_CHROMEDRIVER", &driver)
        .env("SE_OFFLINE", "true")
        .output()
        .expect("python runs");
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "the browser scenario failed:\n{text}\nserver log:\n{}",
        dash.server.logs()
    );
    assert!(text.contains("dashboard browser scenario: ok"), "{text}");
    for name in ["overview", "job", "errors", "schedules", "read-only"] {
        assert!(shots.join(format!("{name}.png")).exists(), "{name}.png");
    }
}

/// Bulk actions from the jobs page: the ticked jobs, or everything the filter matches (a
/// chunk of 1,000 at a time), with a message saying what was done and what could not be.
#[tokio::test(flavor = "multi_thread")]
async fn bulk_actions_act_on_the_ticked_jobs_or_all_matching() {
    let dash = Dash::start();
    let seeded = dash.seed().await;
    let csrf = dash.csrf(&dash.admin).await;
    // Cancel the two ticked waiting jobs.
    let (a, b) = (&seeded.available[0], &seeded.available[1]);
    let response = dash
        .bulk(
            &csrf,
            &[
                ("action", "cancel"),
                ("ids", a),
                ("ids", b),
                ("back", "/jobs?state=available"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location, "/jobs?state=available&done=cancelled+2+jobs",
        "back where it came from, saying what it did"
    );
    for id in [a, b] {
        let job = dash.job(id).await;
        assert_eq!(job["state"], "cancelled");
    }
    // Retry everything dead on the mail queue: the one dead job comes back.
    let response = dash
        .bulk(
            &csrf,
            &[
                ("action", "retry"),
                ("all", "1"),
                ("state", "dead"),
                ("queue", "mail"),
            ],
        )
        .await;
    // All matching runs in the background; its page shows the progress until it is done.
    assert_eq!(response.status(), 303);
    let run = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(run.starts_with("/jobs/bulk/"), "{run}");
    let progress = eventually(
        std::time::Duration::from_secs(10),
        "the bulk retry to finish",
        async || {
            let html = dash.page(&dash.admin, &run).await.text().await.unwrap();
            html.contains(r#"id="bulk-state">done<"#).then_some(html)
        },
    )
    .await;
    assert!(
        progress.contains("retried 1 of ≈1 jobs"),
        "{}",
        &progress[progress.find("<main").unwrap_or(0)..]
    );
    let job = dash.job(&seeded.dead).await;
    assert_eq!(job["state"], "available");
    // Delete all cancelled jobs, and the running one (refused: it must be cancelled first).
    let response = dash
        .bulk(
            &csrf,
            &[
                ("action", "delete"),
                ("ids", a),
                ("ids", b),
                ("ids", &seeded.running),
            ],
        )
        .await;
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with("done=deleted+2+jobs%3B+1+could+not+be+%28not+in+a+state+that+allows+it%29"));
    let gone = dash
        .http
        .get(dash.url(&format!("/v1/jobs/{a}")))
        .bearer_auth(&dash.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    let running = dash.job(&seeded.running).await;
    assert_eq!(running["state"], "running");
    // Nothing ticked: nothing done, and it says so.
    let response = dash.bulk(&csrf, &[("action", "retry")]).await;
    assert!(response.headers()["location"]
        .to_str()
        .unwrap()
        .contains("nothing+selected"));
}
