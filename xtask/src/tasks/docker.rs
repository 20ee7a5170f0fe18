//! Finding Docker and Compose: the engine must answer; Compose is `docker compose` (v2) when
//! present, else `docker-compose` (v1).

use std::process::Command;

use anyhow::bail;

/// Fails with how to fix it when docker is missing or its daemon does not answer.
pub(crate) fn require_engine() -> anyhow::Result<()> {
    match Command::new("docker").arg("info").output() {
        Err(_) => bail!(
            "docker is not installed: install Docker Engine (Debian: apt-get install docker.io docker-compose), \
             or on a machine without systemd run ../shared/offline-images/start-dockerd.sh"
        ),
        Ok(output) if !output.status.success() => bail!(
            "the Docker daemon does not answer ({}): start it (systemctl start docker, or \
             ../shared/offline-images/start-dockerd.sh where there is no systemd)",
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("no output")
        ),
        Ok(_) => Ok(()),
    }
}

/// The Compose command: program and leading arguments.
pub(crate) fn compose_command() -> anyhow::Result<(String, Vec<String>)> {
    let v2 = Command::new("docker").args(["compose", "version"]).output();
    if v2.is_ok_and(|output| output.status.success()) {
        return Ok(("docker".into(), vec!["compose".into()]));
    }
    let v1 = Command::new("docker-compose").arg("version").output();
    if v1.is_ok_and(|output| output.status.success()) {
        return Ok(("docker-compose".into(), Vec::new()));
    }
    bail!(
        "neither `docker compose` nor `docker-compose` is installed (Debian: apt-get install docker-compose)"
    )
}

/// Whether the engine has `image`, pulled now if a registry answers (the pull's progress goes
/// nowhere: on a machine without a registry it fails in a second).
pub(crate) fn has_image(image: &str) -> bool {
    let succeeds = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    succeeds(&["image", "inspect", image]) || succeeds(&["pull", "--quiet", image])
}
