//! A PostgreSQL for tests: `ROTA_TEST_POSTGRES_URL` when set, otherwise a private throwaway
//! cluster (initdb + postgres on a free loopback port, as the `postgres` user when the tests
//! run as root) started once per test process and removed when the process ends. Each test
//! gets its own database ([`TempPostgresDb`]), dropped when it drops.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where the server is and how to reach its admin database.
struct Server {
    /// `postgres://user@host:port` with no database.
    base: String,
    /// The directory holding `psql` (and the other client programs).
    bin: PathBuf,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
/// The shared cluster, kept for the life of the process.
static SHARED: OnceLock<PostgresCluster> = OnceLock::new();
static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// The environment variable naming an existing server to use instead of a throwaway one.
pub const URL_VAR: &str = "ROTA_TEST_POSTGRES_URL";

/// The directory with PostgreSQL's server programs: on PATH, or under
/// `/usr/lib/postgresql/*/bin` (newest first).
fn bin_dir() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return Some(dir);
            }
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_postgres(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A private PostgreSQL cluster on a free loopback port, removed (by a watchdog shell) once
/// this test process is gone, however the process ends. Most tests share one
/// ([`TempPostgresDb`]); a test that stops and restarts the server has its own.
pub struct PostgresCluster {
    server: Server,
    data: PathBuf,
    port: u16,
    dir: PathBuf,
    root: bool,
}

impl PostgresCluster {
    /// initdb and start a new cluster.
    pub fn start() -> Self {
        start_cluster().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        self.server.url(database)
    }

    /// Creates an empty database.
    pub fn create_database(&self, name: &str) {
        self.server.create_database(name);
    }

    /// Runs `sql` in `database` with psql.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        self.server.psql(database, sql)
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let out = self.pg_ctl(&["stop", "-m", "fast", "-w"]);
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server again on the same port and data, and waits until it answers.
    pub fn restart(&self) {
        let out = self.pg_ctl(&["start", "-w", "-l"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.server
            .wait_ready(&self.dir)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = as_postgres(self.root, &self.server.bin.join("pg_ctl"));
        cmd.args(["-D"]).arg(&self.data);
        let (first, rest) = args.split_at(1);
        cmd.args(first);
        if first == ["start"] {
            cmd.args(rest)
                .arg(self.dir.join("server.log"))
                .arg("-o")
                .arg(server_options(self.port, &self.dir));
        } else {
            cmd.args(rest);
        }
        cmd.stdin(Stdio::null()).output().expect("running pg_ctl")
    }
}

/// The server's settings: loopback only, socket in the cluster's directory, and no fsync
/// (a test cluster is thrown away; durability is measured by the benchmarks).
fn server_options(port: u16, dir: &Path) -> String {
    format!(
        "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off \
         -c synchronous_commit=off -c full_page_writes=off -c max_connections=400",
        dir = dir.display()
    )
}

fn start_cluster() -> Result<PostgresCluster, String> {
    let bin = bin_dir().ok_or_else(|| {
        format!(
            "PostgreSQL tests need a server: set {URL_VAR}=postgres://user:password@host:port, \
             or install PostgreSQL (Debian: apt-get install postgresql-15) so that initdb is \
             on PATH or under /usr/lib/postgresql/*/bin"
        )
    })?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!(
        "rota-pg-{}-{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!(
                "cannot give {} to the postgres user",
                dir.display()
            ));
        }
    }
    let data = dir.join("data");
    let out = as_postgres(root, &bin.join("initdb"))
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    // A watchdog shell stops the server and removes its directory once this test process is
    // gone, however the process ends; the server itself may be stopped and started meanwhile.
    let script = format!(
        "while [ -d /proc/{pid} ]; do sleep 0.5; done; \
         {pg_ctl} -D {data} stop -m immediate >/dev/null 2>&1; rm -rf {dir}",
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
        pid = std::process::id(),
    );
    as_postgres(root, Path::new("/bin/sh"))
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the watchdog: {e}"))?;
    let cluster = PostgresCluster {
        server: Server {
            base: format!("postgres://postgres@127.0.0.1:{port}"),
            bin,
        },
        data,
        port,
        dir,
        root,
    };
    let out = cluster.pg_ctl(&["start", "-w", "-l"]);
    if !out.status.success() {
        return Err(format!(
            "pg_ctl start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    cluster.server.wait_ready(&cluster.dir)?;
    Ok(cluster)
}

impl Server {
    fn wait_ready(&self, dir: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                return Err(format!("postgres did not start within 60 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn from_url(url: &str) -> Result<Server, String> {
        // The URL's database is only for admin; test databases sit beside it.
        let base = match url.rfind('/') {
            Some(i) if i > "postgres://".len() => url[..i].to_owned(),
            _ => url.to_owned(),
        };
        let psql_dir = bin_dir().unwrap_or_else(|| PathBuf::from("/usr/bin"));
        Ok(Server {
            base,
            bin: psql_dir,
        })
    }

    fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
    }

    fn url(&self, database: &str) -> String {
        format!("{}/{database}", self.base)
    }

    fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = if self.bin.join("psql").is_file() {
            self.bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let out = Command::new(psql)
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

fn server() -> &'static Server {
    let server = SERVER.get_or_init(|| match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Server::from_url(&url),
        _ => start_cluster().map(|cluster| {
            let server = Server {
                base: cluster.server.base.clone(),
                bin: cluster.server.bin.clone(),
            };
            let _ = SHARED.set(cluster);
            server
        }),
    });
    match server {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

/// An empty database of its own on the test server, dropped (with its connections) on drop.
pub struct TempPostgresDb {
    /// Its URL.
    pub url: String,
    name: String,
}

impl TempPostgresDb {
    /// A fresh, empty database.
    pub fn new() -> Self {
        let server = server();
        let name = format!(
            "rota_test_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        server.create_database(&name);
        Self {
            url: server.url(&name),
            name,
        }
    }

    /// The URL of a database on the same server that does not exist (for start-up tests).
    pub fn missing_url() -> String {
        server().url(&format!(
            "rota_missing_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Runs `sql` in this database with psql; returns what it printed (unaligned, tuples
    /// only).
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        server().psql(&self.name, sql)
    }
}

impl Default for TempPostgresDb {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempPostgresDb {
    fn drop(&mut self) {
        let _ = server().psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
