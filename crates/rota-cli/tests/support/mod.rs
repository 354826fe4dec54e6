//! Real processes for end-to-end tests: a `rota serve` on a free loopback port in a temp
//! dir, and `rota worker` processes, all killed when dropped.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ROTA: &str = env!("CARGO_BIN_EXE_rota");

/// A running `rota serve`.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    /// Extra `rota serve` arguments (kept for restarts).
    args: Vec<String>,
    /// Extra environment variables (kept for restarts).
    env: Vec<(String, String)>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts a server with `config` as its rota.toml.
    pub fn start(config: &str) -> Self {
        Self::start_with_args(config, &[])
    }

    /// Starts a server with `config` as its rota.toml and extra `rota serve` arguments.
    pub fn start_with_args(config: &str, args: &[&str]) -> Self {
        let mut server = Self::spawn_with_args(config, args);
        server.wait_until_listening();
        server
    }

    /// Starts a server without waiting for it to listen (several at once).
    pub fn spawn_with_args(config: &str, args: &[&str]) -> Self {
        Self::spawn_with_env(config, args, &[])
    }

    /// Starts a server with extra environment variables, without waiting for it to listen.
    pub fn spawn_with_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rota.toml"), config).unwrap();
        let port = free_port();
        let mut server = Self {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    /// The process id of the node holding the maintenance leadership, as this server reports
    /// it (node ids are host:pid:start).
    pub async fn leader_pid(&self) -> Option<u32> {
        let list = self.client().workers().await.ok()?;
        list.leader?.node.split(':').nth(1)?.parse().ok()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the server has logged so far (every start).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
            if entry.file_name().to_string_lossy().starts_with("serve-") {
                out += &std::fs::read_to_string(entry.path()).unwrap_or_default();
            }
        }
        out
    }

    /// Starts (again) on the same directory and port, and waits until it answers.
    pub fn restart(&mut self) {
        self.spawn();
        self.wait_until_listening();
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join(format!(
                    "serve-{}.log",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos()
                )))
        .unwrap();
        let child = Command::new(ROTA)
            .args(["serve", "--bind", &format!("127.0.0.1:{}", self.port)])
            .args(&self.args)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the server accepts connections (panics if it exited or took 30 s).
    pub fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("rota serve exited with {status}: {}", self.logs());
            }
            assert!(Instant::now() < deadline, "rota serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM; returns how long the server took to exit.
    pub fn terminate(&mut self) -> Duration {
        let mut child = self.child.take().expect("server running");
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "rota serve exited with {status:?} after SIGTERM"
                );
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "rota serve ignored SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn client(&self) -> rota::Client {
        rota::Client::new(&self.url).unwrap()
    }

    /// Runs a client command against this server.
    pub fn rota(&self, args: &[&str]) -> std::process::Output {
        Command::new(ROTA)
            .args(args)
            .env("ROTA_URL", &self.url)
            .current_dir(self.path())
            .output()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A running `rota worker`.
pub struct Worker {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Worker {
    pub fn start(server: &Server, args: &[&str]) -> Self {
        Self::start_with_env(server, args, &[])
    }

    /// Starts a worker with extra environment variables.
    pub fn start_with_env(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = server.path().join(format!("worker-{}.log", free_port()));
        let child = Command::new(ROTA)
            .arg("worker")
            .args(args)
            .envs(env.iter().copied())
            .env("ROTA_URL", &server.url)
            .current_dir(server.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Whether the worker process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the process to exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit within {within:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` until it returns `Some`, or panics after `within`.
pub async fn eventually<T>(
    within: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A job request on the default queue.
pub fn job(kind: &str, args: serde_json::Value) -> rota::api::NewJobRequest {
    rota::api::NewJobRequest {
        queue: "default".into(),
        kind: kind.into(),
        args,
        ..Default::default()
    }
}

/// Completes every fetched job (no result), with the tokens they were fetched with.
pub async fn complete_all(
    client: &rota::Client,
    jobs: &[rota::api::LeasedJob],
) -> Result<rota::api::ItemOutcomes, rota::ClientError> {
    let completions = jobs
        .iter()
        .map(|j| rota::api::CompletionRequest {
            job: j.id.parse().unwrap(),
            token: j.lease_token,
            result: None,
        })
        .collect();
    client
        .complete(&rota::api::CompleteRequest { completions })
        .await
}

/// A finished process's stdout then stderr, as text (for assertion messages).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Python of a virtual environment `target/<name>` holding exactly the pinned
/// `requirements` (made, or made again when the pins changed; PyPI must be reachable then).
pub fn python_venv(name: &str, requirements: &Path) -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(name);
    let python = venv.join("bin/python");
    let wanted = std::fs::read_to_string(requirements).expect("the pinned requirements");
    let stamp = venv.join("requirements.stamp");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        let made = Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .status()
            .expect("python3 runs (install Python 3.10 or later)");
        assert!(made.success(), "python3 -m venv {}", venv.display());
        let installed = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(requirements)
            .status()
            .expect("pip runs");
        assert!(
            installed.success(),
            "installing {} (is PyPI reachable?)",
            requirements.display()
        );
        std::fs::write(&stamp, &wanted).expect("writing the venv's stamp");
    }
    python
}

/// A fresh token of `scope` made by `rota token new`: the token, and its `[[token]]` entry.
pub fn new_token(name: &str, scope: &str) -> (String, String) {
    let out = Command::new(ROTA)
        .args(["token", "new", "--scope", scope, "--name", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "rota token new: {out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let entry = &stderr[stderr.find("[[token]]").expect("a [[token]] entry")..];
    (token, entry.to_owned())
}
