//! Test support (cargo feature `testing`): a throwaway PostgreSQL cluster.
//!
//! [`PgCluster`] runs the machine's own `initdb` and `pg_ctl` (Debian's `postgresql` package puts them in
//! `/usr/lib/postgresql/<version>/bin`) on a fresh directory under the system temp dir, listening on
//! 127.0.0.1 and a random free port only, with its socket in that directory. Nothing assumes a server already
//! running. If `VOXANNE_TEST_DATABASE_URL` is set, that server is used instead (it must allow
//! `CREATE DATABASE`; the `voxanne_test_*` databases are left there). Each test takes its own database ([`PgCluster::create_database`]) on one cluster
//! shared by the test binary ([`PgCluster::shared`]), which keeps the suite fast.
//!
//! Postgres refuses to run as root. When the tests run as root (as in CI containers), every Postgres command
//! runs as the `postgres` user via `runuser`, and the directory is handed to that user.
//!
//! Cleanup: an owned cluster stops and removes its directory on drop. A watchdog process (started with
//! each local cluster, in its own session) also does so when the test process exits, however it exits, so
//! the process-wide shared cluster — a `static`, never dropped — does not outlive the test run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::Connection as _;

/// Environment variable naming an existing server to test against instead of a throwaway cluster.
pub const TEST_DATABASE_URL_ENV: &str = "VOXANNE_TEST_DATABASE_URL";
/// Environment variable naming the directory holding `initdb` and `pg_ctl`, if not the Debian layout.
pub const PG_BIN_ENV: &str = "VOXANNE_PG_BIN";

const INSTALL_HINT: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them \
    (Debian/Ubuntu: `apt-get install -y postgresql`, which puts them in /usr/lib/postgresql/<version>/bin), \
    or set VOXANNE_PG_BIN to their directory, or set VOXANNE_TEST_DATABASE_URL to a server the tests may \
    create databases on. The Postgres tests do not skip themselves.";

/// Settings for a local throwaway cluster.
#[derive(Clone, Debug)]
pub struct PgClusterOptions {
    /// Run with `fsync=off` and `synchronous_commit=off`: right for tests (speed, the data is thrown away),
    /// wrong for benchmarks that should report what a real server does.
    pub unsafe_fast: bool,
    /// `max_connections` of the server. 200: many tests, each with its own pool, share one cluster.
    pub max_connections: u32,
}

impl Default for PgClusterOptions {
    fn default() -> Self {
        Self {
            unsafe_fast: true,
            max_connections: 200,
        }
    }
}

/// A PostgreSQL server for tests. See the module docs.
#[derive(Debug)]
pub struct PgCluster {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    External { url: String },
    Local(Local),
}

#[derive(Debug)]
struct Local {
    bin: PathBuf,
    /// Temp directory: data directory, socket, logs.
    base: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run Postgres commands as the `postgres` user (we are root).
    as_postgres: bool,
    server_args: String,
}

static SHARED: OnceLock<PgCluster> = OnceLock::new();
static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

impl PgCluster {
    /// The test binary's shared cluster (external if `VOXANNE_TEST_DATABASE_URL` is set), started on first
    /// use. Panics with instructions if no server binaries are found.
    pub fn shared() -> &'static PgCluster {
        SHARED.get_or_init(|| match std::env::var(TEST_DATABASE_URL_ENV) {
            Ok(url) if !url.trim().is_empty() => PgCluster {
                kind: Kind::External { url },
            },
            _ => PgCluster::start_local(PgClusterOptions::default()),
        })
    }

    /// A cluster of its own (always local, never `VOXANNE_TEST_DATABASE_URL`): for tests that stop and start
    /// the server. Stopped and removed on drop. Panics with instructions if no binaries are found.
    pub fn start_local(opts: PgClusterOptions) -> PgCluster {
        let bin = find_bin_dir().unwrap_or_else(|| panic!("{INSTALL_HINT}"));
        let as_postgres = running_as_root();
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let base =
            std::env::temp_dir().join(format!("voxanne-pg-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&base).expect("create temp dir for Postgres");
        if as_postgres {
            let (uid, gid) = postgres_ids()
                .expect("running as root but there is no `postgres` user to run Postgres as");
            std::os::unix::fs::chown(&base, Some(uid), Some(gid))
                .expect("chown temp dir to postgres");
        }
        let data = base.join("data");
        let port = free_port();
        let mut server_args = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections={}",
            base.display(),
            opts.max_connections
        );
        if opts.unsafe_fast {
            server_args.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let local = Local {
            bin,
            base,
            data,
            port,
            as_postgres,
            server_args,
        };
        local.spawn_watchdog();
        local.run(
            "initdb",
            &[
                "-D",
                &local.data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
        );
        let cluster = PgCluster {
            kind: Kind::Local(local),
        };
        cluster.start();
        cluster
    }

    /// True when using `VOXANNE_TEST_DATABASE_URL` rather than a local cluster.
    pub fn is_external(&self) -> bool {
        matches!(self.kind, Kind::External { .. })
    }

    /// URL of the maintenance database (`postgres`).
    pub fn admin_url(&self) -> String {
        match &self.kind {
            Kind::External { url } => url.clone(),
            Kind::Local(l) => format!("postgres://postgres@127.0.0.1:{}/postgres", l.port),
        }
    }

    /// Creates a fresh, empty database and returns its URL.
    pub async fn create_database(&self) -> String {
        let name = format!(
            "voxanne_test_{}_{}_{}",
            std::process::id(),
            DB_COUNTER.fetch_add(1, Ordering::Relaxed),
            uuid::Uuid::new_v4().simple()
        );
        let admin = self.admin_url();
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("connect to test Postgres at {admin}: {e}"));
        // The name is ours (digits, hex, underscores), so formatting it into the statement is safe.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&admin, &name);
        // The first backend of a new database builds its catalog caches (and the relcache init file), the
        // slowest connection it will ever take; on a loaded machine that can exceed a pool's acquire timeout.
        // Take it here, with no timeout, so the tests' pools only ever open ordinary connections.
        let warm = sqlx::PgConnection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connect to new test database {name}: {e}"));
        let _ = warm.close().await;
        url
    }

    /// Starts the server (after [`PgCluster::stop`]); waits until it accepts connections.
    pub fn start(&self) {
        let l = self.local("start");
        l.run(
            "pg_ctl",
            &[
                "-D",
                &l.data.display().to_string(),
                "-l",
                &l.base.join("server.log").display().to_string(),
                "-w",
                "-t",
                "60",
                "-o",
                &l.server_args,
                "start",
            ],
        );
    }

    /// Stops the server (`pg_ctl stop -m fast`: connections are cut, as in a database restart or outage).
    pub fn stop(&self) {
        let l = self.local("stop");
        l.run(
            "pg_ctl",
            &[
                "-D",
                &l.data.display().to_string(),
                "-w",
                "-m",
                "fast",
                "stop",
            ],
        );
    }

    fn local(&self, what: &str) -> &Local {
        match &self.kind {
            Kind::Local(l) => l,
            Kind::External { .. } => panic!("cannot {what} an external test database"),
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Kind::Local(l) = &self.kind {
            let _ = l
                .command(
                    "pg_ctl",
                    &[
                        "-D",
                        &l.data.display().to_string(),
                        "-m",
                        "immediate",
                        "stop",
                    ],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(&l.base);
        }
    }
}

impl Local {
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // The postgres user may not be able to read the test's working directory.
        cmd.args(args).current_dir(&self.base).stdin(Stdio::null());
        cmd
    }

    /// Runs a Postgres command, output to a log file (not a pipe: the server started by `pg_ctl` must not hold
    /// our pipes open); panics with the log on failure.
    fn run(&self, program: &str, args: &[&str]) {
        let log_path = self.base.join(format!("{program}.out"));
        let log = std::fs::File::create(&log_path).expect("create Postgres command log");
        let status = self
            .command(program, args)
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        if !status.success() {
            let out = std::fs::read_to_string(&log_path).unwrap_or_default();
            let server = std::fs::read_to_string(self.base.join("server.log")).unwrap_or_default();
            panic!("{program} {args:?} failed ({status}):\n{out}\nserver log:\n{server}");
        }
    }

    /// Stops the server and removes the directory once this process has exited, whatever the cause.
    fn spawn_watchdog(&self) {
        let stop = format!(
            "{}{} -D '{}' -m immediate stop",
            if self.as_postgres {
                "runuser -u postgres -- "
            } else {
                ""
            },
            self.bin.join("pg_ctl").display(),
            self.data.display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf '{base}'",
            pid = std::process::id(),
            base = self.base.display()
        );
        let spawn = |program: &str, args: &[&str]| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
        };
        // Own session, so a Ctrl-C to the test run's process group does not kill the watchdog too.
        if spawn("setsid", &["sh", "-c", &script]).is_err() {
            let _ = spawn("sh", &["-c", &script]);
        }
    }
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(dir) = std::env::var(PG_BIN_ENV) {
        let dir = PathBuf::from(dir);
        return has_tools(&dir).then_some(dir);
    }
    // Debian layout; newest major version first.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            has_tools(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    // Anything on PATH (Homebrew, Nix, Fedora's /usr/bin).
    std::env::var_os("PATH").and_then(|path| std::env::split_paths(&path).find(|d| has_tools(d)))
}

fn running_as_root() -> bool {
    // Effective uid, from /proc (no libc: the workspace forbids unsafe code).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut fields = line.split(':').skip(2);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

/// `url` with its database name replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    // postgres://user@host:port/dbname: the database is after the first '/' following the authority.
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let authority_end = base[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(base.len());
    let mut out = format!("{}/{db}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5/postgres", "x"),
            "postgres://u:p@h:5/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
