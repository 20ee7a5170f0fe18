//! `cargo xtask nginx-standin`: builds `local/nginx:1.27-standin`, a stand-in for
//! `nginx:1.27-alpine` made from Debian's nginx package on a debootstrap root filesystem, the
//! way ../shared/offline-images makes the other stand-ins. For machines with no registry; it
//! never takes the public name.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};

pub(crate) const NGINX_STANDIN: &str = "local/nginx:1.27-standin";

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
