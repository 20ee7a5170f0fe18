//! Stand-ins for machines with no registry; they never take the public name.
//! `cargo xtask nginx-standin`: `local/nginx:1.27-standin` for `nginx:1.27-alpine`, Debian's nginx
//! on a debootstrap root filesystem, the way ../shared/offline-images makes the other stand-ins.
//! `cargo xtask mcp-standin`: `local/mcp-everything:standin` for `mcp/everything`, the reference
//! MCP server from npm (as installed under xtask/sdk/node) and this machine's Node on the slim
//! Debian stand-in.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};

pub(crate) const NGINX_STANDIN: &str = "local/nginx:1.27-standin";
pub(crate) const MCP_STANDIN: &str = "local/mcp-everything:standin";

/// Builds [`MCP_STANDIN`]: `node dist/index.js streamableHttp` in the package's directory, as
/// docker/compose.mcp.yaml runs it (the public image's working directory holds `dist/` too).
pub(crate) fn mcp_server(shell: &xshell::Shell) -> anyhow::Result<()> {
    crate::tasks::docker::require_engine()?;
    let root = crate::project_root();
    let modules = dev_harness::TestTools::get()?.node_modules();
    let node = xshell::cmd!(shell, "sh -c 'readlink -f \"$(command -v node)\"'").read()?;
    let context = root.join("target/mcp-standin-context");
    let _ = std::fs::remove_dir_all(&context);
    std::fs::create_dir_all(&context)?;
    std::fs::copy(&node, context.join("node"))?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(&modules)
        .arg(context.join("node_modules"))
        .status()?;
    ensure!(status.success(), "copying node_modules failed");
    std::fs::write(
        context.join("Dockerfile"),
        "ARG SLIM_IMAGE\nFROM ${SLIM_IMAGE}\nCOPY node /usr/local/bin/node\n\
         COPY node_modules /app/node_modules\n\
         WORKDIR /app/node_modules/@modelcontextprotocol/server-everything\n\
         LABEL org.opencontainers.image.description=local-stand-in-for-mcp/everything\n\
         USER 65532:65532\nEXPOSE 3001\nCMD [\"node\", \"dist/index.js\", \"streamableHttp\"]\n",
    )?;
    let slim = std::env::var("SLIM_IMAGE").unwrap_or_else(|_| "local/debian:bookworm-slim".into());
    xshell::cmd!(
        shell,
        "docker build --quiet --tag {MCP_STANDIN} --build-arg SLIM_IMAGE={slim} {context}"
    )
    .env("DOCKER_BUILDKIT", "0")
    .run()?;
    println!("xtask: built {MCP_STANDIN} (use MCP_SERVER_IMAGE={MCP_STANDIN})");
    Ok(())
}

pub(crate) fn nginx() -> anyhow::Result<()> {
    crate::tasks::docker::require_engine()?;
    let cache = PathBuf::from(
        std::env::var("STANDINS_CACHE").unwrap_or_else(|_| "/var/cache/agent-standins".into()),
    );
    let rootfs = cache.join("rootfs-nginx");
    if !rootfs.join(".complete").exists() {
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::create_dir_all(&cache)?;
        let mirror = std::env::var("DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        println!("xtask: debootstrap of nginx (a few minutes, once)");
        let status = Command::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=nginx-light,wget",
                "bookworm",
            ])
            .arg(&rootfs)
            .arg(mirror)
            .stdout(Stdio::null())
            .status()
            .context("debootstrap is missing: apt-get install debootstrap")?;
        ensure!(status.success(), "debootstrap failed");
        for leftover in ["var/cache/apt/archives", "var/lib/apt/lists"] {
            let _ = std::fs::remove_dir_all(rootfs.join(leftover));
            std::fs::create_dir_all(rootfs.join(leftover))?;
        }
        // Only our configuration is served; logs go to the container's output.
        let _ = std::fs::remove_file(rootfs.join("etc/nginx/sites-enabled/default"));
        for (log, target) in [("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")] {
            let path = rootfs.join("var/log/nginx").join(log);
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(target, &path)?;
        }
        std::fs::write(rootfs.join(".complete"), "")?;
    }
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--exclude=./.complete", "-C"])
        .arg(&rootfs)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let tar_output = tar.stdout.take().context("tar has no output")?;
    let import = Command::new("docker")
        .args([
            "import",
            "-c",
            "CMD [\"nginx\", \"-g\", \"daemon off;\"]",
            "-c",
            "EXPOSE 8080",
            "-c",
            "LABEL org.opencontainers.image.description=local-stand-in-for-nginx:1.27-alpine",
            "-",
            NGINX_STANDIN,
        ])
        .stdin(tar_output)
        .stdout(Stdio::null())
        .status()?;
    ensure!(
        tar.wait()?.success() && import.success(),
        "importing the nginx stand-in failed"
    );
    println!("xtask: built {NGINX_STANDIN} (use NGINX_IMAGE={NGINX_STANDIN})");
    Ok(())
}
