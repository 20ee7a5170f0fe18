//! Postgres and Redis for the test suite: the servers named by `DATABASE_URL` and `REDIS_URL` if
//! they answer, otherwise throwaway servers started from the installed binaries in a temporary
//! directory on free ports, and stopped when the returned guards drop.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const INSTALL_HINT: &str = "install them with `apt-get install postgresql redis-server`, or set \
    DATABASE_URL and REDIS_URL to running servers";

/// Running test services; dropping it stops what it started.
#[derive(Debug)]
pub(crate) struct Services {
    pub(crate) database_url: String,
    pub(crate) redis_url: String,
    _postgres: Option<Postgres>,
    _redis: Option<Redis>,
}

pub(crate) fn start() -> anyhow::Result<Services> {
    let (database_url, postgres) = match existing("DATABASE_URL") {
        Some(url) => (url, None),
        None => {
            let postgres = Postgres::start()?;
            (postgres.url(), Some(postgres))
        }
    };
    let (redis_url, redis) = match existing("REDIS_URL") {
        Some(url) => (url, None),
        None => {
            let redis = Redis::start()?;
            (redis.url(), Some(redis))
        }
    };
    Ok(Services {
        database_url,
        redis_url,
        _postgres: postgres,
        _redis: redis,
    })
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
        println!("xtask: using the server in {variable}");
        Some(url)
    } else {
        println!("xtask: {variable} is set but nothing answers there; starting a throwaway server");
        None
    }
}

#[derive(Debug)]
struct Postgres {
    directory: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> anyhow::Result<Self> {
        let bin = postgres_bin()
            .with_context(|| format!("no Postgres binaries found: {INSTALL_HINT}"))?;
        let directory = temporary_directory("pg")?;
        if is_root() {
            // initdb refuses to run as root; the server runs as the postgres user.
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&directory))?;
        }
        let postgres = Self {
            directory,
            bin,
            port: crate::http::free_port()?,
        };
        let data = postgres.directory.join("data");
        run(postgres
            .as_postgres("initdb")
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&data))?;
        let options = format!(
            "-p {} -k {} -h 127.0.0.1 -F -c max_connections=400",
            postgres.port,
            postgres.directory.display()
        );
        run(postgres
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["start", "-w", "-o", &options, "-l"])
            .arg(postgres.directory.join("server.log")))?;
        wait_for_port(postgres.port)?;
        println!(
            "xtask: started Postgres on 127.0.0.1:{} ({})",
            postgres.port,
            postgres.directory.display()
        );
        Ok(postgres)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
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

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.directory.join("data");
        let stopped = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["stop", "-m", "fast", "-w"])
            .output();
        if stopped.is_err() {
            eprintln!(
                "xtask: could not stop Postgres in {}",
                self.directory.display()
            );
        }
        let _ = std::fs::remove_dir_all(&self.directory);
        println!("xtask: stopped Postgres");
    }
}

#[derive(Debug)]
struct Redis {
    child: Child,
    directory: PathBuf,
    port: u16,
}

impl Redis {
    fn start() -> anyhow::Result<Self> {
        let directory = temporary_directory("redis")?;
        let port = crate::http::free_port()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&directory)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run redis-server: {INSTALL_HINT}"))?;
        let redis = Self {
            child,
            directory,
            port,
        };
        wait_for_port(port)?;
        println!("xtask: started Redis on 127.0.0.1:{port}");
        Ok(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
        println!("xtask: stopped Redis");
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

fn temporary_directory(kind: &str) -> anyhow::Result<PathBuf> {
    let directory = std::env::temp_dir().join(format!("agent-xtask-{kind}-{}", std::process::id()));
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

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing answered on 127.0.0.1:{port} within 30 s")
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
