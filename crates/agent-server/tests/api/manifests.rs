//! The Kubernetes manifests in `deploy/kubernetes`, checked without a cluster: the probes and
//! the port exist in the server, every environment name is a documented one and the
//! configuration loads, the grace period covers the drain, nothing runs as root, secrets are
//! files the server reads, the objects refer to each other; and the Kubernetes schemas through
//! `kubernetes-validate` (PyPI) when installed, which CI requires.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::spawn_app;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// Every YAML file under `deploy/kubernetes`, recursively.
fn yaml_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path
            .extension()
            .is_some_and(|extension| extension == "yaml")
        {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// Every document of every manifest, with its file.
fn documents() -> Vec<(PathBuf, Value)> {
    yaml_files(&deploy())
        .into_iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            serde_norway::Deserializer::from_str(&text)
                .map(|document| {
                    let value = <Value as serde::Deserialize>::deserialize(document)
                        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                    (path.clone(), value)
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The one object of `kind` in the base.
fn base(kind: &str) -> Value {
    let found: Vec<Value> = documents()
        .into_iter()
        .filter(|(path, document)| {
            path.parent().unwrap().ends_with("base") && document["kind"] == kind
        })
        .map(|(_, document)| document)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} in the base");
    found.into_iter().next().unwrap()
}

fn container() -> Value {
    base("Deployment")["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The ConfigMap's data: the base's, with the example overlay's patch applied.
fn configuration() -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    let mut configmaps: Vec<(PathBuf, Value)> = documents()
        .into_iter()
        .filter(|(_, document)| document["kind"] == "ConfigMap")
        .collect();
    // The base first, then the overlay's patch.
    configmaps.sort_by_key(|(path, _)| !path.parent().unwrap().ends_with("base"));
    for (_, configmap) in configmaps {
        for (name, value) in configmap["data"].as_object().unwrap() {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap value of {name} must be a string"));
            data.insert(name.clone(), value.to_owned());
        }
    }
    data
}

/// The environment the server gets: the ConfigMap and the Deployment's own variables.
fn environment() -> BTreeMap<String, String> {
    let mut environment = configuration();
    let container = container();
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"],
        base("ConfigMap")["metadata"]["name"]
    );
    for variable in container["env"].as_array().unwrap() {
        environment.insert(
            variable["name"].as_str().unwrap().to_owned(),
            variable["value"].as_str().unwrap().to_owned(),
        );
    }
    environment
}

/// The container port a probe or Service names (by name or number).
fn container_port(port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    container()["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|candidate| candidate["name"] == *port)
        .unwrap_or_else(|| panic!("no container port named {port}"))["containerPort"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn every_probe_is_a_server_route_on_the_port_the_server_listens_on() {
    let app = spawn_app().await;
    let container = container();
    let port: u64 = environment()["PORT"].parse().unwrap();
    for (probe, path) in [
        ("startupProbe", "/startup"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe} checks {path}");
        assert_eq!(container_port(&get["port"]), port, "{probe} port");
        let status = app.get(path).await.status().as_u16();
        assert_eq!(status, 200, "GET {path} on the server answered {status}");
        assert!(
            container[probe]["timeoutSeconds"].as_u64().unwrap() >= 1
                && container[probe]["failureThreshold"].as_u64().unwrap() >= 1,
            "{probe} has a timeout and a failure threshold"
        );
    }
    // Readiness waits longer than the server's own bound on its checks, so a slow check gives
    // a 503 with a reason instead of a probe timeout.
    let loaded = agent_config::load_from(loadable_environment()).unwrap();
    assert!(
        container["readinessProbe"]["timeoutSeconds"]
            .as_u64()
            .unwrap()
            > loaded.settings.health.check_timeout.as_secs()
    );
}

/// The environment with each `<NAME>_FILE` replaced by a stand-in value for `<NAME>`, so the
/// configuration can be loaded without the mounted files.
fn loadable_environment() -> Vec<(String, String)> {
    environment()
        .into_iter()
        .map(|(name, value)| match name.strip_suffix("_FILE") {
            Some(secret) if secret == "DATABASE_URL" => (
                secret.to_owned(),
                "postgres://agent:x@postgres/agent".into(),
            ),
            Some(secret) if secret == "REDIS_URL" => {
                (secret.to_owned(), "redis://redis:6379".into())
            }
            Some(secret) => (secret.to_owned(), "stand-in".into()),
            None => (name, value),
        })
        .collect()
}

#[test]
fn every_environment_name_is_documented_and_the_configuration_loads() {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.env.example"))
            .unwrap();
    let documented: BTreeSet<&str> = example
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect();
    // A secret is named by its aliases or AGENT_<PATH> (dots as double underscores).
    let secrets: BTreeSet<String> = agent_config::KEYS
        .iter()
        .filter(|key| key.is_secret())
        .flat_map(|key| key.env_names())
        .collect();
    for name in environment().keys() {
        match name.strip_suffix("_FILE") {
            Some(secret) => assert!(
                secrets.contains(secret) && documented.contains(secret),
                "{name}: only documented secrets have a _FILE form"
            ),
            None => assert!(
                documented.contains(name.as_str()),
                "{name} is not in .env.example"
            ),
        }
    }
    let loaded = agent_config::load_from(loadable_environment())
        .unwrap_or_else(|error| panic!("the manifests' configuration does not load: {error}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn the_grace_period_is_longer_than_the_shutdown_delay_and_the_drain() {
    let settings = agent_config::load_from(loadable_environment())
        .unwrap()
        .settings;
    let grace = base("Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let needed = settings.server.shutdown_delay + settings.server.drain_timeout;
    assert!(
        std::time::Duration::from_secs(grace) > needed,
        "terminationGracePeriodSeconds {grace} s must exceed the shutdown delay and drain ({needed:?})"
    );
}

#[test]
fn nothing_runs_as_root_and_the_pod_is_locked_down() {
    let pod = base("Deployment")["spec"]["template"]["spec"].clone();
    let pod_security = &pod["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"], true);
    assert_ne!(pod_security["runAsUser"], 0);
    assert_ne!(pod_security["runAsGroup"], 0);
    assert_eq!(pod_security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null());
    for container in pod["containers"].as_array().unwrap() {
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_ne!(security["runAsUser"], 0);
        assert!(security["privileged"].is_null() || security["privileged"] == false);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(security["capabilities"]["add"].is_null());
        let resources = &container["resources"];
        for bound in ["requests", "limits"] {
            assert!(
                resources[bound]["memory"].is_string() && resources[bound]["cpu"].is_string(),
                "{bound} for cpu and memory"
            );
        }
    }
}

#[test]
fn secrets_are_files_from_the_secret_the_overlay_provides() {
    let pod = base("Deployment")["spec"]["template"]["spec"].clone();
    let container = container();
    let secret_names: BTreeMap<String, String> = documents()
        .into_iter()
        .filter(|(_, document)| document["kind"] == "Secret")
        .flat_map(|(_, secret)| {
            let name = secret["metadata"]["name"].as_str().unwrap().to_owned();
            secret["stringData"]
                .as_object()
                .unwrap()
                .keys()
                .map(|key| (key.clone(), name.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let files: Vec<(String, String)> = environment()
        .into_iter()
        .filter(|(name, _)| name.ends_with("_FILE"))
        .collect();
    assert!(files.len() >= 3, "the secrets are passed as files");
    for (name, file) in files {
        let (directory, key) = file.rsplit_once('/').unwrap();
        let mount = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|mount| mount["mountPath"] == directory)
            .unwrap_or_else(|| panic!("{name}: nothing is mounted at {directory}"));
        assert_eq!(mount["readOnly"], true);
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|volume| volume["name"] == mount["name"])
            .unwrap();
        let secret = volume["secret"]["secretName"].as_str().unwrap();
        assert_eq!(
            secret_names.get(key).map(String::as_str),
            Some(secret),
            "{name}: the Secret {secret} has no key {key}"
        );
    }
}

#[test]
fn the_objects_refer_to_each_other_and_kustomize_lists_every_file() {
    let deployment = base("Deployment");
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"].clone();
    let matches = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(key, value)| pod_labels[key] == *value)
    };
    assert!(matches(&deployment["spec"]["selector"]["matchLabels"]));
    let service = base("Service");
    assert!(matches(&service["spec"]["selector"]));
    for port in service["spec"]["ports"].as_array().unwrap() {
        container_port(&port["targetPort"]);
    }
    let name = &deployment["metadata"]["name"];
    assert_eq!(
        base("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"],
        *name
    );
    let pdb = base("PodDisruptionBudget");
    assert!(matches(&pdb["spec"]["selector"]["matchLabels"]));
    let replicas = base("HorizontalPodAutoscaler")["spec"]["minReplicas"]
        .as_u64()
        .unwrap();
    assert!(
        replicas >= 2 && pdb["spec"]["maxUnavailable"].as_u64() < Some(replicas),
        "the disruption budget leaves replicas serving"
    );
    let policy = base("NetworkPolicy");
    assert!(matches(&policy["spec"]["podSelector"]["matchLabels"]));
    for rule in policy["spec"]["ingress"].as_array().unwrap() {
        for port in rule["ports"].as_array().unwrap() {
            container_port(&port["port"]);
        }
    }
    // Kustomize: every listed file exists, and every manifest of the base is listed.
    let kustomization = base("Kustomization");
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|resource| resource.as_str().unwrap().to_owned())
        .collect();
    let present: BTreeSet<String> = yaml_files(&deploy().join("base"))
        .into_iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|file| file != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present);
    let overlay = deploy().join("overlays/example");
    let overlay_kustomization: Value = serde_norway::from_str(
        &std::fs::read_to_string(overlay.join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    for resource in overlay_kustomization["resources"].as_array().unwrap() {
        assert!(
            overlay.join(resource.as_str().unwrap()).exists(),
            "{resource}"
        );
    }
    for patch in overlay_kustomization["patches"].as_array().unwrap() {
        assert!(
            overlay.join(patch["path"].as_str().unwrap()).exists(),
            "{patch}"
        );
    }
}

/// The Kubernetes OpenAPI schemas, strictly (unknown fields fail), through `kubernetes-validate`
/// from PyPI, in the venv the test harness provisions.
#[test]
fn the_manifests_match_the_kubernetes_schemas() {
    let files: Vec<PathBuf> = yaml_files(&deploy())
        .into_iter()
        .filter(|path| !path.ends_with("kustomization.yaml"))
        .collect();
    let validator = test_support::TestTools::get()
        .unwrap()
        .program("kubernetes-validate");
    let output = std::process::Command::new(validator)
        .arg("--strict")
        .arg("--quiet")
        .args(&files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
