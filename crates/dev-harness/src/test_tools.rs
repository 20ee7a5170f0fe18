//! The test tools from the registries, provisioned by the harness itself so that the README's
//! test command needs nothing but what the README names: a Python venv of its own under
//! `target/test-tools/python`, from the exact pins of `crates/dev-harness/python/requirements.txt`
//! (the MCP server of the MCP tests, Schemathesis, kubernetes-validate, the SDKs of
//! `cargo xtask sdk`, Selenium), the npm packages of `xtask/sdk/node` from its lock file, and
//! `cargo-deny` (crates.io, built by `cargo install --locked` into `target/test-tools/cargo`).
//! Each is made once and remade when its pins change; the system interpreter's packages are never
//! used. A tool that cannot be provisioned (a missing `python3`, `npm` or Debian package) is an
//! error with one line saying what to install, never a skipped test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, bail};

/// The pinned Python packages, as committed.
const REQUIREMENTS: &str = "crates/dev-harness/python/requirements.txt";
/// The npm packages' directory: the scripts there import them, so they are installed beside them.
const NODE_PACKAGES: &str = "xtask/sdk/node";
/// Written into a provisioned directory with the pins it was made from.
const STAMP: &str = ".provisioned";
/// `cargo-deny`'s pinned version (its own dependencies are pinned by its lock file: `--locked`).
const CARGO_DENY: &str = "0.20.2";

/// Provisioned test tools: a venv, and the npm packages of the checks.
#[derive(Debug, Clone)]
pub struct TestTools {
    venv: PathBuf,
}

impl TestTools {
    /// The tools of this checkout (`target/test-tools`), made first if they are missing or their
    /// pins changed: once per process, and under a file lock between processes (test binaries
    /// may run at once).
    pub fn get() -> anyhow::Result<&'static TestTools> {
        static TOOLS: OnceLock<Result<TestTools, String>> = OnceLock::new();
        TOOLS
            .get_or_init(|| {
                let root = workspace_root().join("target/test-tools");
                Self::provision(&root)
                    .and_then(|tools| provision_node().map(|()| tools))
                    .map_err(|error| format!("{error:#}"))
            })
            .as_ref()
            .map_err(|error| anyhow::anyhow!("the test tools could not be provisioned: {error}"))
    }

    /// Makes the Python tools in `root` (missing, empty or stale), or does nothing when they
    /// are current. Only the pinned packages go in: the venv sees no system site-packages.
    pub fn provision(root: &Path) -> anyhow::Result<TestTools> {
        let tools = TestTools {
            venv: root.join("python"),
        };
        std::fs::create_dir_all(root).with_context(|| format!("cannot make {}", root.display()))?;
        let _lock = lock(&root.join(".lock"))?;
        let pins = std::fs::read_to_string(workspace_root().join(REQUIREMENTS))
            .with_context(|| format!("cannot read {REQUIREMENTS}"))?;
        if is_current(&tools.venv, &pins) && tools.python().exists() {
            return Ok(tools);
        }
        let started = Instant::now();
        println!(
            "harness: installing the Python test tools into {} (pip, about a minute the first time)",
            tools.venv.display()
        );
        if tools.venv.exists() {
            std::fs::remove_dir_all(&tools.venv)
                .with_context(|| format!("cannot remove {}", tools.venv.display()))?;
        }
        let system_python = system_program("python3", "python3 python3-venv")?;
        run(
            Command::new(system_python)
                .args(["-m", "venv"])
                .arg(&tools.venv),
            "python3 -m venv failed: apt-get install python3-venv",
        )?;
        run(
            Command::new(tools.python())
                .args(["-m", "pip", "install", "--quiet", "--no-input"])
                .args(["--disable-pip-version-check", "--requirement"])
                .arg(workspace_root().join(REQUIREMENTS)),
            &format!("pip could not install {REQUIREMENTS} (is PyPI reachable?)"),
        )?;
        std::fs::write(tools.venv.join(STAMP), pins)?;
        println!(
            "harness: Python test tools ready in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Ok(tools)
    }

    /// The venv's interpreter.
    pub fn python(&self) -> PathBuf {
        self.venv.join("bin/python")
    }

    /// A program the pinned packages install (`st`, `kubernetes-validate`).
    pub fn program(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    /// The npm packages' `node_modules`.
    pub fn node_modules(&self) -> PathBuf {
        workspace_root().join(NODE_PACKAGES).join("node_modules")
    }
}

/// `cargo-deny` (the layering, licence and source rules of `deny.toml`), built from crates.io into
/// `target/test-tools/cargo` the first time (a few minutes), then reused while its pin holds.
pub fn cargo_deny() -> anyhow::Result<PathBuf> {
    let root = workspace_root().join("target/test-tools/cargo");
    let program = root.join("bin/cargo-deny");
    std::fs::create_dir_all(&root).with_context(|| format!("cannot make {}", root.display()))?;
    let _lock = lock(&root.join(".lock"))?;
    if is_current(&root, CARGO_DENY) && program.exists() {
        return Ok(program);
    }
    let started = Instant::now();
    println!(
        "harness: building cargo-deny {CARGO_DENY} into {} (cargo install, a few minutes the first time)",
        root.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Its own build directory, removed after: only the binary is kept.
    let build = root.join("build");
    run(
        Command::new(cargo)
            .args(["install", "--locked", "--quiet", "--force"])
            .arg(format!("cargo-deny@{CARGO_DENY}"))
            .arg("--root")
            .arg(&root)
            .arg("--target-dir")
            .arg(&build),
        "cargo install cargo-deny failed (is crates.io reachable?)",
    )?;
    std::fs::remove_dir_all(&build).ok();
    std::fs::write(root.join(STAMP), CARGO_DENY)?;
    println!(
        "harness: cargo-deny ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(program)
}

/// `npm ci` in [`NODE_PACKAGES`] unless its `node_modules` was made from the current lock file.
fn provision_node() -> anyhow::Result<()> {
    let directory = workspace_root().join(NODE_PACKAGES);
    let modules = directory.join("node_modules");
    let pins = std::fs::read_to_string(directory.join("package-lock.json"))
        .context("cannot read xtask/sdk/node/package-lock.json")?;
    let _lock = lock(&workspace_root().join("target/test-tools/.npm-lock"))?;
    if is_current(&modules, &pins) {
        return Ok(());
    }
    system_program("node", "nodejs")?;
    let npm = system_program("npm", "npm")?;
    let started = Instant::now();
    println!(
        "harness: installing the npm test packages into {NODE_PACKAGES}/node_modules (npm ci)"
    );
    run(
        Command::new(npm)
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&directory),
        "npm ci failed (is the npm registry reachable?)",
    )?;
    std::fs::write(modules.join(STAMP), pins)?;
    println!(
        "harness: npm test packages ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A program of the system's, or an error naming the Debian package(s) that install it.
pub fn system_program(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{name} is not installed: apt-get install {package}"))
}

/// Whether `directory` was provisioned from exactly `pins`.
fn is_current(directory: &Path, pins: &str) -> bool {
    std::fs::read_to_string(directory.join(STAMP)).is_ok_and(|stamp| stamp == pins)
}

/// An exclusive lock on `path`, held until the file is dropped.
fn lock(path: &Path) -> anyhow::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

fn run(command: &mut Command, failure: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{failure} ({status})");
    }
    Ok(())
}

pub(crate) fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}
