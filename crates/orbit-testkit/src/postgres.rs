//! A PostgreSQL server for tests: `ORBIT_TEST_DATABASE_URL` when it is set, else a throwaway
//! cluster in a temporary directory, started once per test process with the machine's
//! PostgreSQL binaries (`scripts/setup-postgres.sh` installs them), and a fresh database for
//! every test, so tests run in parallel.
//!
//! The cluster runs as an unprivileged user when the tests run as root (PostgreSQL refuses
//! root), listens only on a unix socket in its own directory (no port to collide with another
//! test process), and is stopped and removed when the test process ends however it ends: it
//! is started by a small shell that waits for its standard input to close, which happens when
//! the test process exits or is killed, and then stops the server and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where the tests' databases are: a server URL, databases made in it per test.
struct Server {
    /// The URL of the server's `postgres` database, from which test databases are made.
    admin_url: String,
    /// `psql`, to make and drop databases without a client library here.
    psql: PathBuf,
    /// Keeps the watchdog's standard input open while the test process lives.
    _watchdog: Option<Mutex<Child>>,
}

static SERVER: OnceLock<Server> = OnceLock::new();

/// A database of its own for one test; dropped (forcibly) when the test ends.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// A fresh, empty database.
    pub fn new() -> Self {
        let server = SERVER.get_or_init(Server::start);
        let name = format!("orbit_test_{}", unique_suffix());
        let mut last_error = String::new();
        for _ in 0..5 {
            match server.psql(&format!("CREATE DATABASE \"{name}\"")) {
                Ok(_) => {
                    return Self { url: with_database(&server.admin_url, &name), name };
                }
                // Concurrent creations from one template can collide; try again.
                Err(err) => last_error = err,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("cannot create a test database: {last_error}");
    }
}

impl TestDatabase {
    /// Takes the database away from its clients as an outage would: every connection to it
    /// is ended and new ones are refused, until [`Self::restore`].
    pub fn cut_off(&self) {
        let server = SERVER.get_or_init(Server::start);
        let name = &self.name;
        server.psql(&format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false")).unwrap();
        server
            .psql(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .unwrap();
    }

    /// Runs `sql` in this database, as an operator (or another program) would, outside
    /// Orbit.
    pub fn execute(&self, sql: &str) {
        self.query(sql);
    }

    /// What `sql` answers in this database, read as an operator would: one line per row,
    /// fields separated by `|`.
    pub fn query(&self, sql: &str) -> String {
        let server = SERVER.get_or_init(Server::start);
        server.query_on(&self.url, sql).unwrap()
    }

    /// Gives the database back after [`Self::cut_off`].
    pub fn restore(&self) {
        let server = SERVER.get_or_init(Server::start);
        let name = &self.name;
        server.psql(&format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true")).unwrap();
    }
}

impl Default for TestDatabase {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(server) = SERVER.get() {
            let _ = server.psql(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
        }
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `url` naming database `name` instead of its own (URL form only).
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgresql", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map(|at| &tail[at..]).unwrap_or("");
    format!("{scheme}://{authority}/{name}{query}")
}

/// The directory of the machine's PostgreSQL programs: `ORBIT_TEST_POSTGRES_BIN`, else the
/// newest `/usr/lib/postgresql/*/bin` (Debian's layout).
pub fn postgres_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ORBIT_TEST_POSTGRES_BIN") {
        return PathBuf::from(bin);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL is not installed: run ./scripts/setup-postgres.sh (./scripts/test.sh \
             does), or set ORBIT_TEST_DATABASE_URL to a server the tests may create databases in"
        ),
    }
}

/// Whether this process runs as root (PostgreSQL then runs as `nobody`).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// The unprivileged user the cluster runs as under root.
const UNPRIVILEGED: u32 = 65534;

/// `program` as a command that runs unprivileged when this process is root.
fn unprivileged(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={UNPRIVILEGED}"))
            .arg(format!("--regid={UNPRIVILEGED}"))
            .arg("--clear-groups")
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Server {
    fn start() -> Server {
        let bin = postgres_bin();
        let psql = bin.join("psql");
        if let Ok(url) = std::env::var("ORBIT_TEST_DATABASE_URL") {
            return Server { admin_url: with_database(&url, "postgres"), psql, _watchdog: None };
        }
        let dir = std::env::temp_dir().join(format!("orbit-test-pg-{}", unique_suffix()));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).unwrap();
        if running_as_root() {
            std::os::unix::fs::chown(&dir, Some(UNPRIVILEGED), Some(UNPRIVILEGED)).unwrap();
        }
        let initdb = unprivileged(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "orbit", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .unwrap();
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        // The server, with a shell that stops it and removes its directory once the test
        // process's end closes the shell's standard input.
        let server = unprivileged(&bin.join("postgres"));
        let mut argv: Vec<String> = vec![server.get_program().to_string_lossy().into_owned()];
        argv.extend(server.get_args().map(|a| a.to_string_lossy().into_owned()));
        argv.extend(
            [
                "-D",
                &data.display().to_string(),
                "-k",
                &dir.display().to_string(),
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=400",
                "-c",
                "shared_buffers=64MB",
            ]
            .map(String::from),
        );
        let script = "\"$@\" >\"$ORBIT_PG_DIR/log\" 2>&1 & pg=$!; \
                      read _ignored; kill -QUIT $pg 2>/dev/null; wait $pg; rm -rf \"$ORBIT_PG_DIR\"";
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("orbit-test-postgres")
            .args(&argv)
            .env("ORBIT_PG_DIR", &dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let admin_url = format!("postgresql:///postgres?host={}&user=orbit", dir.display());
        let server = Server { admin_url, psql, _watchdog: Some(Mutex::new(watchdog)) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match server.psql("SELECT 1") {
                Ok(_) => break,
                Err(err) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                    panic!("the test PostgreSQL did not start: {err}\n{log}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        server
    }

    fn psql(&self, sql: &str) -> Result<String, String> {
        self.query_on(&self.admin_url, sql)
    }

    /// What `sql` prints, unaligned and without headers: one line per row, fields by `|`.
    fn query_on(&self, url: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(&self.psql)
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| err.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }
}
