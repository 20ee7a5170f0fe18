//! `cargo xtask image`: stages a hermetic build context under `target/docker-context` (the
//! workspace, its vendored dependencies, and stub crate roots for the dependency layer), builds
//! `docker/Dockerfile` with the legacy builder, and reports the image.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use xshell::{Shell, cmd};

/// Crates only ever built for other platforms: their sources are dropped from the context
/// (their manifests stay, as the lock file names them).
const FOREIGN_PLATFORM_CRATES: &[&str] = &[
    "winapi-",
    "windows-",
    "windows_",
    "web-sys-",
    "js-sys-",
    "wasm-bindgen",
    "wasi-",
    "redox_",
];

#[derive(Debug, Clone)]
pub(crate) struct ImageOptions {
    pub(crate) tag: String,
    pub(crate) rust_image: String,
    pub(crate) runtime_image: String,
}

impl ImageOptions {
    /// The tag and base images, from the command line or the environment (`RUST_IMAGE`,
    /// `RUNTIME_IMAGE`), else the public defaults of the Dockerfile.
    pub(crate) fn new(
        tag: Option<String>,
        rust_image: Option<String>,
        runtime_image: Option<String>,
    ) -> Self {
        let env = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|value| !value.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Self {
            tag: tag.unwrap_or_else(|| env("AGENT_IMAGE", "agent-server:latest")),
            rust_image: rust_image.unwrap_or_else(|| env("RUST_IMAGE", "rust:1.95-slim-bookworm")),
            runtime_image: runtime_image
                .unwrap_or_else(|| env("RUNTIME_IMAGE", "gcr.io/distroless/cc-debian12:nonroot")),
        }
    }
}

pub(crate) fn build(shell: &Shell, options: &ImageOptions) -> anyhow::Result<()> {
    crate::tasks::docker::require_engine()?;
    let started = Instant::now();
    let root = crate::project_root();
    let context = root.join("target/docker-context");
    stage(shell, &root, &context)?;
    stage_build_tools(shell, &context, &options.rust_image)?;
    let version = env!("CARGO_PKG_VERSION");
    let revision = cmd!(shell, "git rev-parse HEAD")
        .ignore_stderr()
        .read()
        .unwrap_or_else(|_| "unknown".into());
    let created = cmd!(shell, "date -u +%Y-%m-%dT%H:%M:%SZ").read()?;
    let ImageOptions {
        tag,
        rust_image,
        runtime_image,
    } = options;
    cmd!(
        shell,
        "docker build --network none --tag {tag} --file {context}/Dockerfile
            --build-arg RUST_IMAGE={rust_image} --build-arg RUNTIME_IMAGE={runtime_image}
            --build-arg VERSION={version} --build-arg REVISION={revision} --build-arg CREATED={created}
            {context}"
    )
    .env("DOCKER_BUILDKIT", "0")
    .run()
    .context("docker build failed")?;
    let (id_format, size_format) = ("{{.Id}}", "{{.Size}}");
    let id = cmd!(shell, "docker image inspect --format {id_format} {tag}").read()?;
    let size: u64 = cmd!(shell, "docker image inspect --format {size_format} {tag}")
        .read()?
        .trim()
        .parse()?;
    println!("image:         {tag}");
    println!("id:            {id}");
    println!("size:          {:.1} MB ({size} bytes)", size as f64 / 1e6);
    println!("builder image: {rust_image}");
    println!("runtime image: {runtime_image}");
    println!("build time:    {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Puts in `context/build-tools` the Debian packages of the build tools `rust_image` lacks
/// (`make`, which jemalloc's build runs), downloaded by the builder image's own `apt-get` so they
/// fit its release and architecture; the Dockerfile installs them with `dpkg`, and the build
/// itself stays network-free. Kept until the builder image changes.
fn stage_build_tools(shell: &Shell, context: &Path, rust_image: &str) -> anyhow::Result<()> {
    let tools = context.join("build-tools");
    let stamp = context.join("build-tools.image");
    if tools.is_dir() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(rust_image) {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&tools);
    std::fs::create_dir_all(&tools)?;
    let mount = format!("{}:/out", tools.display());
    let script = "command -v make >/dev/null || \
        { apt-get update -qq && cd /out && apt-get download -qq -o APT::Sandbox::User=root make; }";
    cmd!(
        shell,
        "docker run --rm --volume {mount} {rust_image} sh -ec {script}"
    )
    .run()
    .context("downloading make for the builder image failed (it needs Debian's package mirror)")?;
    std::fs::write(&stamp, rust_image)?;
    Ok(())
}

/// Lays out `context`: Dockerfile, cargo-config.toml, vendor/, stubs/, libs/ and server/
/// (workspace/ is the full copy they are made from).
fn stage(shell: &Shell, root: &Path, context: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(context)?;
    let lock = std::fs::read_to_string(root.join("Cargo.lock"))?;
    let stamp = context.join("vendor.lock");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        let vendor = context.join("vendor");
        let _ = std::fs::remove_dir_all(&vendor);
        cmd!(
            shell,
            "cargo vendor --locked --versioned-dirs --quiet {vendor}"
        )
        .ignore_stdout()
        .run()
        .context("cargo vendor failed")?;
        prune_vendor(&vendor)?;
        std::fs::write(&stamp, &lock)?;
    }
    std::fs::write(
        context.join("cargo-config.toml"),
        "[source.crates-io]\nreplace-with = \"vendored-sources\"\n\n[source.vendored-sources]\ndirectory = \"vendor\"\n",
    )?;
    std::fs::copy(root.join("docker/Dockerfile"), context.join("Dockerfile"))?;
    std::fs::write(context.join(".dockerignore"), "")?;

    // workspace/: the sources, without the toolchain pin (the builder image is the pin).
    let workspace = context.join("workspace");
    let _ = std::fs::remove_dir_all(&workspace);
    std::fs::create_dir_all(&workspace)?;
    for file in ["Cargo.toml", "Cargo.lock"] {
        std::fs::copy(root.join(file), workspace.join(file))?;
    }
    for directory in ["crates", "xtask"] {
        copy_tree(&root.join(directory), &workspace.join(directory))?;
    }

    // stubs/: the same manifests with every crate root empty; unchanged by source edits, so the
    // dependency layer stays cached.
    let stubs = context.join("stubs");
    let _ = std::fs::remove_dir_all(&stubs);
    for file in ["Cargo.toml", "Cargo.lock"] {
        copy_file(&workspace.join(file), &stubs.join(file))?;
    }
    for manifest in manifests(&workspace)? {
        let relative = manifest.strip_prefix(&workspace)?;
        copy_file(&manifest, &stubs.join(relative))?;
        write_stub_roots(
            &workspace,
            manifest.parent().context("a manifest has a directory")?,
            &stubs,
        )?;
    }

    // libs/: the workspace with agent-server stubbed; server/: agent-server's sources.
    let libs = context.join("libs");
    let _ = std::fs::remove_dir_all(&libs);
    copy_tree(&workspace, &libs)?;
    let server_in_libs = libs.join("crates/agent-server");
    for directory in ["src", "tests"] {
        let _ = std::fs::remove_dir_all(server_in_libs.join(directory));
    }
    write_stub_roots(&workspace, &workspace.join("crates/agent-server"), &libs)?;
    let server = context.join("server");
    let _ = std::fs::remove_dir_all(&server);
    copy_tree(&workspace.join("crates/agent-server/src"), &server)?;
    std::fs::remove_dir_all(&workspace)?;
    Ok(())
}

/// Writes, under `into`, an empty version of each target root of the crate in `crate_dir`.
fn write_stub_roots(workspace: &Path, crate_dir: &Path, into: &Path) -> anyhow::Result<()> {
    for root_file in crate_roots(crate_dir)? {
        let stub = into.join(root_file.strip_prefix(workspace)?);
        let is_library = root_file.ends_with("src/lib.rs");
        std::fs::create_dir_all(stub.parent().context("a file has a directory")?)?;
        std::fs::write(&stub, if is_library { "" } else { "fn main() {}\n" })?;
    }
    Ok(())
}

fn manifests(workspace: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = vec![workspace.join("xtask/Cargo.toml")];
    for entry in std::fs::read_dir(workspace.join("crates"))? {
        let manifest = entry?.path().join("Cargo.toml");
        if manifest.exists() {
            found.push(manifest);
        }
    }
    Ok(found)
}

/// The files cargo needs to find a crate's targets: lib.rs, main.rs, src/bin/*, benches/*.
fn crate_roots(crate_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut roots: Vec<PathBuf> = ["src/lib.rs", "src/main.rs"]
        .iter()
        .map(|file| crate_dir.join(file))
        .filter(|path| path.exists())
        .collect();
    for directory in ["src/bin", "benches"] {
        if let Ok(entries) = std::fs::read_dir(crate_dir.join(directory)) {
            roots.extend(
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "rs")),
            );
        }
    }
    Ok(roots)
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to.parent().context("a file has a directory")?)?;
    std::fs::copy(from, to).with_context(|| format!("cannot copy {}", from.display()))?;
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        // Build output, and the SDK checks' npm packages (xtask/sdk/node): not sources.
        if entry.file_name() == "target" || entry.file_name() == "node_modules" {
            continue;
        }
        if path.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()))?;
        } else {
            copy_file(&path, &to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// Drops the sources of crates built only for other platforms, keeping their manifests and
/// empty `.rs` files so cargo can still read them; their checksums stop listing files.
fn prune_vendor(vendor: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(vendor)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !FOREIGN_PLATFORM_CRATES
            .iter()
            .any(|prefix| name.starts_with(prefix))
        {
            continue;
        }
        prune_crate(&entry.path(), &entry.path())?;
        let checksum_path = entry.path().join(".cargo-checksum.json");
        let checksum = std::fs::read_to_string(&checksum_path)?;
        let package = checksum
            .split("\"package\":")
            .nth(1)
            .map(|rest| rest.trim_end_matches(['}', '\n', ' ']).to_owned());
        let rewritten = match package {
            Some(package) => format!("{{\"files\":{{}},\"package\":{package}}}"),
            None => "{\"files\":{}}".to_owned(),
        };
        std::fs::write(&checksum_path, rewritten)?;
    }
    Ok(())
}

fn prune_crate(crate_root: &Path, directory: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(directory)? {
        let entry = entry?;
        let path = entry.path();
        if path.is_dir() {
            prune_crate(crate_root, &path)?;
            continue;
        }
        let keep = path.parent() == Some(crate_root)
            && matches!(
                entry.file_name().to_str(),
                Some("Cargo.toml" | ".cargo-checksum.json")
            );
        if keep {
            continue;
        }
        if path.extension().is_some_and(|extension| extension == "rs") {
            std::fs::write(&path, "")?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}
