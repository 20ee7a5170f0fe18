//! Throwaway Postgres and Redis servers, started from the installed binaries in a temporary
//! directory on free ports and stopped when dropped: the one implementation behind
//! `cargo xtask test` (and bench, soak), and the tests that stop and restart a server.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::process::{free_port, wait_for_port};

const INSTALL_HINT: &str = "install them with `apt-get install postgresql redis-server`, or set \
    DATABASE_URL and REDIS_URL to running servers";

/// Postgres and Redis for a test run; dropping it stops what it started.
#[derive(Debug)]
pub struct Services {
    pub database_url: String,
    pub redis_url: String,
    _postgres: Option<ThrowawayPostgres>,
    _redis: Option<ThrowawayRedis>,
}

impl Services {
    /// The servers named by `DATABASE_URL` and `REDIS_URL` if something answers there, otherwise
    /// throwaway servers of this run's own.
    pub fn start_or_reuse() -> anyhow::Result<Self> {
        let (database_url, postgres) = match existing("DATABASE_URL") {
            Some(url) => (url, None),
            None => {
                let postgres = ThrowawayPostgres::start()?;
                (postgres.url(), Some(postgres))
            }
        };
        let (redis_url, redis) = match existing("REDIS_URL") {
            Some(url) => (url, None),
            None => {
                let redis = ThrowawayRedis::start()?;
                (redis.url(), Some(redis))
            }
        };
        Ok(Self {
            database_url,
            redis_url,
            _postgres: postgres,
            _redis: redis,
        })
    }
}

/// The URL in `variable`, if set and something listens at its host and port.
fn existing(variable: &str) -> Option<String> {
    let url = std::env::var(variable).ok().filter(|url| !url.is_empty())?;
    let authority = url.split("://").nth(1)?.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:0")
    };
    let answers = host_port
        .to_socket_addrs()
        .ok()?
        .any(|address| TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok());
    if answers {
        println!("harness: using the server in {variable}");
        Some(url)
    } else {
        println!(
            "harness: {variable} is set but nothing answers there; starting a throwaway server"
        );
        None
    }
}

/// A Postgres server of its own, on a free port; stopped and deleted on drop.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    directory: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl ThrowawayPostgres {
    /// Initialises and starts a server from the installed binaries (up to 400 connections, as
    /// the workspace's tests run many servers' pools at once).
    pub fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()
            .with_context(|| format!("no Postgres binaries found: {INSTALL_HINT}"))?;
        let directory = temporary_directory("pg")?;
        if is_root() {
            // initdb refuses to run as root; the server runs as the postgres user.
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&directory))?;
        }
        let server = Self {
            directory,
            bin,
            port: free_port()?,
        };
        run(server
            .as_postgres("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(server.data()))?;
        server.start_again()?;
        println!(
            "harness: started Postgres on 127.0.0.1:{} ({})",
            server.port,
            server.directory.display()
        );
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: open connections are closed).
    pub fn stop(&self) -> anyhow::Result<()> {
        run(&mut self.pg_ctl(&["stop", "-m", "fast", "-w"]))
    }

    /// Starts it (again) on the same port with the same data, and waits until it answers.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -h 127.0.0.1 -F -c max_connections=400",
            self.port,
            self.directory.display()
        );
        let log = self.directory.join("server.log");
        run(self.pg_ctl(&["start", "-w", "-o", &options, "-l"]).arg(log))?;
        wait_for_port(self.port)
    }

    fn data(&self) -> PathBuf {
        self.directory.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.as_postgres("pg_ctl");
        command.arg("-D").arg(self.data()).args(args);
        command
    }

    fn as_postgres(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        // Immediate: nothing here needs a clean shutdown, and a test may have left it stopped.
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]).output();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A Redis server of its own, on a free port, without persistence (or with, to restart with its
/// keys as a Redis container does); killed on drop.
#[derive(Debug)]
pub struct ThrowawayRedis {
    port: u16,
    child: Option<Child>,
    /// Where a persistent server writes its snapshot.
    snapshots: Option<PathBuf>,
    /// Its working directory, deleted on drop.
    directory: PathBuf,
}

impl ThrowawayRedis {
    /// Starts `redis-server` from the PATH and waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(false)
    }

    /// Like [`ThrowawayRedis::start`], but `stop` shuts down as `docker stop` does (SIGTERM, which
    /// saves a snapshot) and `restart` loads it: keys survive a restart.
    pub fn start_persistent() -> anyhow::Result<Self> {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> anyhow::Result<Self> {
        let directory = temporary_directory("redis")?;
        let mut server = Self {
            port: free_port()?,
            child: None,
            snapshots: persistent.then(|| directory.clone()),
            directory,
        };
        server.restart()?;
        println!("harness: started Redis on 127.0.0.1:{}", server.port);
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its connections are closed; a persistent one saves its keys first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.snapshots.is_some() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
            } else {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty unless it is persistent).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--appendonly",
            "no",
        ]);
        match &self.snapshots {
            Some(directory) => command.args(["--save", "3600 1", "--dir"]).arg(directory),
            None => command.args(["--save", "", "--dir"]).arg(&self.directory),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run redis-server: {INSTALL_HINT}"))?;
        self.child = Some(child);
        wait_for_port(self.port)
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

fn run(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .output()
        .with_context(|| format!("failed to run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A new directory of its own under the system's temporary directory.
fn temporary_directory(kind: &str) -> anyhow::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let unique = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let directory = std::env::temp_dir().join(format!(
        "agent-{kind}-{}-{unique}-{nanos}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("cannot create {}", directory.display()))?;
    Ok(directory)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The newest installed `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
