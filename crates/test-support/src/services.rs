//! Throwaway Postgres and Redis servers of a test's own, for tests that stop and restart them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A Postgres server of the test's own, on a free port; stopped and deleted on drop.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    directory: PathBuf,
    bin: PathBuf,
    port: u16,
}

impl ThrowawayPostgres {
    /// Initialises and starts a server from the installed binaries.
    pub fn start() -> Self {
        let bin = postgres_bin().expect(
            "no Postgres binaries under /usr/lib/postgresql/*/bin: apt-get install postgresql",
        );
        let directory =
            std::env::temp_dir().join(format!("agent-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).unwrap();
        if is_root() {
            // initdb refuses to run as root; the server runs as the postgres user.
            run(Command::new("chown")
                .arg("postgres:postgres")
                .arg(&directory));
        }
        let port = free_port();
        let server = Self {
            directory,
            bin,
            port,
        };
        run(server
            .as_postgres(&server.bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--no-sync",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(server.data()));
        server.pg_ctl_start();
        server
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: open connections are closed).
    pub fn stop(&self) {
        run(&mut self.pg_ctl(&["stop", "-m", "fast", "-w"]));
    }

    /// Starts it again on the same port with the same data.
    pub fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -h 127.0.0.1 -F",
            self.port,
            self.directory.display()
        );
        let log = self.directory.join("server.log");
        let mut command = self.pg_ctl(&["start", "-w", "-o", &options, "-l"]);
        run(command.arg(log));
    }

    fn data(&self) -> PathBuf {
        self.directory.join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut command = self.as_postgres(&self.bin.join("pg_ctl"));
        command.arg("-D").arg(self.data()).args(args);
        command
    }

    fn as_postgres(&self, program: &Path) -> Command {
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
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]).output();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

/// A Redis server of the test's own, on a free port, without persistence (or with, to restart
/// with its keys as a Redis container does); killed on drop.
#[derive(Debug)]
pub struct ThrowawayRedis {
    port: u16,
    child: Option<Child>,
    /// Where a persistent server writes its snapshot.
    directory: Option<PathBuf>,
}

impl ThrowawayRedis {
    /// Starts `redis-server` from the PATH and waits until it accepts connections.
    pub fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            directory: None,
        };
        server.restart();
        server
    }

    /// Like [`ThrowawayRedis::start`], but `stop` shuts down as `docker stop` does (SIGTERM, which
    /// saves a snapshot) and `restart` loads it: keys survive a restart.
    pub fn start_persistent() -> Self {
        let directory =
            std::env::temp_dir().join(format!("agent-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&directory).expect("a temporary directory for Redis");
        let mut server = Self {
            port: free_port(),
            child: None,
            directory: Some(directory),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its connections are closed; a persistent one saves its keys first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.directory.is_some() {
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
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--port", &port, "--bind", "127.0.0.1", "--appendonly", "no"]);
        match &self.directory {
            Some(directory) => command.args(["--save", "3600 1", "--dir"]).arg(directory),
            None => command.args(["--save", ""]),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(directory) = &self.directory {
            let _ = std::fs::remove_dir_all(directory);
        }
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The newest installed `/usr/lib/postgresql/<version>/bin`.
fn postgres_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
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
