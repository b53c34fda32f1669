//! The Helm chart `charts/proto`, checked by Helm v4's own SDK (the PyPI package
//! `helm-python-sdk`, driven by `tests/chart/helm.py`): strict lint, rendering with the default
//! and with every option on (`tests/data/chart-full-values.yaml`), the values schema refusing
//! bad values by name, the Role's rules equal to the controller's (`tests/data/kube-role.yaml`),
//! and the chart's CRDs equal to `crds/` (its `crds/` holds links to them; Helm packages the
//! linked contents).
//!
//! Then what Helm renders is applied to a real kube-apiserver (`tests/support/kube.rs`) and
//! accepted, the example company of `examples/kubernetes/` too, and the rendered RBAC is
//! checked by the API server itself: the chart's ServiceAccount may do exactly what the
//! controller needs, and no more.
//!
//! `scripts/test.sh` installs the SDK into a virtual environment under `target/helm-venv` and
//! exports `PROTO_TEST_HELM`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

#[path = "support/kube.rs"]
mod kube_support;

use kube_support::Cluster;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/proto")
}

/// The Python of the virtual environment holding the Helm SDK, failing with what to do when
/// it is not there.
fn python() -> PathBuf {
    let venv = std::env::var_os("PROTO_TEST_HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/helm-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "no Python virtual environment with helm-python-sdk at {}: run scripts/test.sh (it \
         installs the SDK there)",
        venv.display()
    );
    python
}

/// Runs `tests/chart/helm.py` with `args` and parses the JSON it prints.
fn helm(args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg(root().join("tests/chart/helm.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm.py {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The chart rendered into `namespace` with the values file `values` (the defaults when
/// `None`): every object, with the template it came from.
fn render(namespace: &str, values: Option<&Path>) -> Result<Vec<(String, Value)>, String> {
    let chart = chart();
    let mut args = vec!["render", chart.to_str().unwrap(), namespace];
    if let Some(values) = values {
        args.push(values.to_str().unwrap());
    }
    let result = helm(&args);
    if let Some(error) = result.get("error") {
        return Err(error.as_str().unwrap().to_string());
    }
    Ok(result["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["template"].as_str().unwrap().to_string(),
                o["object"].clone(),
            )
        })
        .collect())
}

/// The chart's NOTES.txt as `helm install` would print it, with default values.
fn notes(namespace: &str) -> String {
    let chart = chart();
    let result = helm(&["render", chart.to_str().unwrap(), namespace]);
    result["notes"].as_str().unwrap().to_string()
}

/// Renders values given as YAML text (written to a temporary file).
fn render_text(namespace: &str, values: &str) -> Result<Vec<(String, Value)>, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("values.yaml");
    std::fs::write(&path, values).unwrap();
    render(namespace, Some(&path))
}

fn full_values() -> PathBuf {
    root().join("tests/data/chart-full-values.yaml")
}

/// `Kind/namespace/name` of every object, sorted.
fn kinds(objects: &[(String, Value)]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|(_, o)| o["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    kinds
}

fn find<'a>(objects: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} among {:?}", kinds(objects)))
}

/// Role rules as a set of `(apiGroup, resource, verbs)`, so that order and grouping do not
/// matter, only the permissions granted.
fn permissions(rules: &Value) -> BTreeSet<(String, String, BTreeSet<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let mut out = BTreeSet::new();
    for rule in rules.as_array().unwrap() {
        let verbs: BTreeSet<String> = strings(&rule["verbs"]).into_iter().collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                assert!(
                    out.insert((group.clone(), resource.clone(), verbs.clone())),
                    "{group}/{resource} appears twice in {rules}"
                );
            }
        }
    }
    out
}

/// The controller's Role as the Kubernetes tests use it.
fn kube_role() -> Value {
    let text = std::fs::read_to_string(root().join("tests/data/kube-role.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

#[test]
fn the_chart_passes_helms_strict_lint_with_default_and_full_values() {
    let chart = chart();
    let full = full_values();
    for args in [
        vec!["lint", chart.to_str().unwrap()],
        vec!["lint", chart.to_str().unwrap(), full.to_str().unwrap()],
    ] {
        let report = helm(&args);
        assert_eq!(report["total_charts_linted"], 1, "{report}");
        assert_eq!(report["errors"], json!([]), "{args:?}: {report}");
        // Strict lint makes warnings errors; infos (such as "icon is recommended") stay.
        let serious: Vec<&Value> = report["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["severity"].as_u64().unwrap() >= 2)
            .collect();
        assert!(serious.is_empty(), "{args:?}: {serious:#?}");
    }
}

#[test]
fn default_values_render_the_controller_with_a_namespaced_role_and_no_extras() {
    let objects = render("proto", None).unwrap();
    assert_eq!(
        kinds(&objects),
        [
            "Deployment",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    for (template, object) in &objects {
        assert_eq!(object["metadata"]["namespace"], "proto", "{template}");
        let labels = &object["metadata"]["labels"];
        for label in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[label].is_string(), "{template} lacks {label}");
        }
    }

    let deployment = find(&objects, "Deployment", "proto");
    assert_eq!(deployment["spec"]["replicas"], 1);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "proto");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "controller");
    assert!(
        args.windows(2)
            .any(|w| w == ["--namespace", "$(POD_NAMESPACE)"]),
        "{args:?}"
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--state-dir", "/var/lib/proto"]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--lease-duration", "15s"]),
        "{args:?}"
    );
    // `proto controller` serves no HTTP, so by default nothing listens and nothing probes.
    assert!(!args.contains(&"--listen"), "{args:?}");
    assert!(container["livenessProbe"].is_null(), "{container}");
    assert!(container["resources"]["requests"]["memory"].is_string());
    // Nothing secret is configured by default, so no secret reaches the pod.
    let env = container["env"].as_array().unwrap();
    assert!(
        env.iter().all(|e| e["valueFrom"]["secretKeyRef"].is_null()),
        "{env:?}"
    );

    // The notes say where the company goes and how to give it a provider key.
    let notes = notes("proto");
    for line in [
        "in proto.",
        "kubectl get goals -n proto -w",
        "--set providerKey.secretName=",
    ] {
        assert!(notes.contains(line), "NOTES.txt lacks {line:?}:\n{notes}");
    }
    assert!(!notes.contains("port-forward"), "{notes}");
}

#[test]
fn full_values_render_every_optional_object_and_wire_secrets_by_reference() {
    let objects = render("proto-chart-full", Some(&full_values())).unwrap();
    assert_eq!(
        kinds(&objects),
        [
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    let deployment = find(&objects, "Deployment", "proto-controller");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example.com/proto:0.1.0");
    let env = container["env"].as_array().unwrap();
    let secret_of = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {env:?}"))["valueFrom"]["secretKeyRef"]
            .clone()
    };
    assert_eq!(
        secret_of("ANTHROPIC_API_KEY"),
        json!({"name": "proto-anthropic", "key": "api-key"})
    );
    assert_eq!(
        secret_of("PROTO_WEBHOOK_SECRET"),
        json!({"name": "proto-webhook", "key": "secret"})
    );
    // The watched namespace and the lease timing are passed to the controller.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for pair in [
        ["--namespace", "proto-chart-team"],
        ["--lease-duration", "20s"],
        ["--renew-deadline", "15s"],
        ["--retry-period", "3s"],
    ] {
        assert!(
            args.windows(2).any(|w| w == pair),
            "{pair:?} not in {args:?}"
        );
    }
    assert!(
        args.windows(2)
            .any(|w| w == ["--token-file", "/etc/proto/api-token/token"]),
        "{args:?}"
    );
    let volumes = pod["volumes"].to_string();
    for secret in ["proto-api-token", "proto-git-ssh", "proto-git-https"] {
        assert!(volumes.contains(secret), "{secret} not mounted: {volumes}");
    }

    // The Role is in the watched namespace, bound to the ServiceAccount of the release's;
    // nothing is granted in the release's namespace or cluster-wide.
    let role = find(&objects, "Role", "proto-controller");
    assert_eq!(role["metadata"]["namespace"], "proto-chart-team");
    let binding = find(&objects, "RoleBinding", "proto-controller");
    assert_eq!(binding["metadata"]["namespace"], "proto-chart-team");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "proto-controller", "namespace": "proto-chart-full"}])
    );

    assert!(
        args.windows(2).any(|w| w == ["--listen", "0.0.0.0:7070"]),
        "{args:?}"
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let service = find(&objects, "Service", "proto-controller");
    assert_eq!(service["spec"]["ports"][0]["port"], 7070);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    let monitor = find(&objects, "ServiceMonitor", "proto-controller");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["authorization"]["credentials"]["name"],
        "proto-api-token"
    );
}

/// The container's arguments of a rendered Deployment, with the pod's variables expanded as
/// the kubelet expands `$(VAR)`.
fn container_args(objects: &[(String, Value)]) -> Vec<String> {
    let deployment = objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o["kind"] == "Deployment")
        .unwrap();
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("$(POD_NAMESPACE)", "proto"))
        .collect()
}

/// Whether this build's `proto` accepts `args`: with `--help` last, clap parses every
/// argument before it (an unknown flag or a missing value is an error) and then only prints
/// help, so nothing runs.
fn proto_accepts(args: &[String]) -> Result<(), String> {
    let out = Command::new(env!("CARGO_BIN_EXE_proto"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn the_deployment_runs_proto_with_arguments_it_accepts() {
    let git = render_text(
        "proto",
        "source: {kind: git, git: {url: 'https://git.example.com/c.git', path: company, branch: main}}\n\
         api: {tokenSecret: {name: proto-api-token}}\nextraArgs: [--keep-events-days, '7']\n",
    )
    .unwrap();
    let args = container_args(&git);
    proto_accepts(&args).unwrap_or_else(|e| panic!("proto {args:?}:\n{e}"));

    // Kubernetes mode's subcommand comes with the controller; where this build has it, the
    // chart's arguments must be its flags.
    if proto_accepts(&["controller".to_string()]).is_err() {
        eprintln!("this build of proto has no `controller` subcommand: its arguments unchecked");
        return;
    }
    let args = container_args(&render("proto", None).unwrap());
    assert_eq!(args[0], "controller");
    proto_accepts(&args).unwrap_or_else(|e| panic!("proto {args:?}:\n{e}"));
    // With the API on (the full values), the controller is told to listen: checked once it
    // can (`api.enabled` is off by default until then).
    let args = container_args(&render("proto", Some(&full_values())).unwrap());
    if proto_accepts(&[
        "controller".into(),
        "--listen".into(),
        "0.0.0.0:7070".into(),
    ])
    .is_ok()
    {
        proto_accepts(&args).unwrap_or_else(|e| panic!("proto {args:?}:\n{e}"));
    } else {
        let mut without_api = Vec::new();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if arg == "--listen" || arg == "--token-file" {
                rest.next(); // and its value
            } else {
                without_api.push(arg.clone());
            }
        }
        eprintln!("`proto controller` has no --listen: the full values checked without the API");
        proto_accepts(&without_api).unwrap_or_else(|e| panic!("proto {without_api:?}:\n{e}"));
    }
}

#[test]
fn without_the_api_nothing_listens_or_is_probed() {
    let objects = render_text(
        "proto",
        "api: {enabled: false, tokenSecret: {name: proto-api-token}}\n\
         webhook: {secretName: proto-webhook}\nnetworkPolicy: {enabled: true}\n",
    )
    .unwrap();
    assert!(!kinds(&objects).contains(&"Service".to_string()));
    let args = container_args(&objects);
    assert!(
        !args.iter().any(|a| a == "--listen" || a == "--token-file"),
        "{args:?}"
    );
    let deployment = find(&objects, "Deployment", "proto");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    for field in ["ports", "livenessProbe", "readinessProbe"] {
        assert!(container[field].is_null(), "{field}: {container}");
    }
    let text = pod.to_string();
    assert!(
        !text.contains("proto-api-token") && !text.contains("proto-webhook"),
        "{text}"
    );
    let policy = find(&objects, "NetworkPolicy", "proto");
    assert_eq!(policy["spec"]["ingress"], json!([]));

    let error = render_text(
        "proto",
        "api: {enabled: false}\nserviceMonitor: {enabled: true}\n",
    )
    .unwrap_err();
    assert!(error.contains("needs api.enabled"), "{error}");
    // The git source, which listens by default, is told not to.
    let git = render_text(
        "proto",
        "api: {enabled: false}\nsource: {kind: git, git: {url: 'https://git.example.com/c.git'}}\n",
    )
    .unwrap();
    let args = container_args(&git);
    assert!(
        args.windows(2).any(|w| w == ["--listen", "none"]),
        "{args:?}"
    );
    proto_accepts(&args).unwrap_or_else(|e| panic!("proto {args:?}:\n{e}"));
}

#[test]
fn the_controller_watches_one_namespace() {
    let error = render_text("proto", "watchNamespaces: [a, b]\n").unwrap_err();
    assert!(error.contains("/watchNamespaces"), "{error}");
    let error = render_text("proto", "watchNamespaces: ['*']\n").unwrap_err();
    assert!(error.contains("/watchNamespaces/0"), "{error}");
}

#[test]
fn the_git_source_runs_proto_run_with_one_replica_and_no_api_access() {
    let objects = render_text(
        "proto",
        "source: {kind: git, git: {url: 'https://git.example.com/acme/company.git', branch: main}}\n",
    )
    .unwrap();
    assert!(
        !kinds(&objects).iter().any(|k| k.contains("Role")),
        "{:?}",
        kinds(&objects)
    );
    let deployment = find(&objects, "Deployment", "proto");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let args = &pod["containers"][0]["args"];
    assert_eq!(args[0], "run");
    assert_eq!(args[1], "https://git.example.com/acme/company.git");
    // `proto run` serves the API, so it is on unless turned off.
    assert!(kinds(&objects).contains(&"Service".to_string()));
    assert_eq!(
        pod["containers"][0]["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );

    let two = render_text(
        "proto",
        "replicas: 2\nsource: {kind: git, git: {url: 'https://git.example.com/c.git'}}\n",
    )
    .unwrap_err();
    assert!(two.contains("set replicas: 1"), "{two}");
    let no_url = render_text("proto", "source: {kind: git}\n").unwrap_err();
    assert!(no_url.contains("source.git.url"), "{no_url}");
}

#[test]
fn the_values_schema_refuses_wrong_types_and_unknown_keys_by_name() {
    for (values, expected) in [
        ("replicas: two\n", "/replicas': got string, want integer"),
        (
            "replica: 2\n",
            "additional properties 'replica' not allowed",
        ),
        (
            "providerKey: {secretName: proto-anthropic, value: sk-ant-123}\n",
            "additional properties 'value' not allowed",
        ),
        ("source: {kind: flux}\n", "/source/kind"),
        (
            "leaderElection: {enabled: true}\n",
            "additional properties 'enabled' not allowed",
        ),
        ("api: {port: 70000}\n", "/api/port"),
        ("persistence: {size: lots}\n", "/persistence/size"),
    ] {
        let error = render_text("proto", values).unwrap_err();
        assert!(
            error.contains(expected),
            "{values:?}: {error:?} does not say {expected:?}"
        );
    }
    // ServiceMonitor without the token Prometheus would need is refused with the reason.
    let error = render_text(
        "proto",
        "api: {enabled: true}\nserviceMonitor: {enabled: true}\n",
    )
    .unwrap_err();
    assert!(error.contains("api.tokenSecret.name"), "{error}");
}

#[test]
fn the_rendered_role_grants_exactly_the_controllers_rules() {
    let expected = permissions(&kube_role()["rules"]);
    for values in [None, Some(full_values())] {
        let objects = render("proto", values.as_deref()).unwrap();
        let role = objects
            .iter()
            .map(|(_, o)| o)
            .find(|o| o["kind"] == "Role")
            .unwrap();
        assert_eq!(permissions(&role["rules"]), expected, "{values:?}");
        assert!(
            kinds(&objects).iter().all(|k| !k.starts_with("Cluster")),
            "{values:?}: {:?}",
            kinds(&objects)
        );
    }
    // Secrets, pods and cluster-wide rights are never asked for.
    for (group, resource, _) in &expected {
        assert!(
            !["secrets", "pods", "*"].contains(&resource.as_str()) && group != "*",
            "{group}/{resource}"
        );
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let mut generated: Vec<String> = std::fs::read_dir(root().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    generated.sort();
    assert_eq!(generated.len(), 5, "{generated:?}");
    // What Helm itself loads as the chart's CRDs (and would install), file by file.
    let loaded = helm(&["crds", chart().to_str().unwrap()]);
    let mut in_chart: Vec<(String, String)> = loaded["crds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["filename"].as_str().unwrap();
            let name = name.trim_start_matches("proto/crds/").to_string();
            (name, c["data"].as_str().unwrap().to_string())
        })
        .collect();
    in_chart.sort();
    let names: Vec<&String> = in_chart.iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        generated.iter().collect::<Vec<_>>(),
        "Helm loads other CRDs than crds/ holds"
    );
    for (name, data) in &in_chart {
        let source = std::fs::read_to_string(root().join("crds").join(name)).unwrap();
        assert!(
            &source == data,
            "charts/proto/crds/{name} differs from crds/{name}: it should be the link \
             `ln -sf ../../../crds/{name} charts/proto/crds/{name}`"
        );
    }
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD, which no registry reachable
/// here ships: the fields the chart sets, typed as upstream types them, and nothing else, so
/// that a misspelt field would be pruned and seen missing when read back.
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [selector]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: {type: object, additionalProperties: {type: string}}
                namespaceSelector:
                  type: object
                  properties:
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      authorization:
                        type: object
                        properties:
                          type: {type: string}
                          credentials:
                            type: object
                            required: [key]
                            properties:
                              key: {type: string}
                              name: {type: string}
"#;

/// Waits until the CRD `name` is established (its kind served).
async fn wait_established(client: &kube::Client, name: &str) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for _ in 0..300 {
        let crd = api.get(name).await.unwrap();
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("CRD {name} not established after 30 s");
}

/// Whether the ServiceAccount behind `client` may `verb` the `resource` (in `group`,
/// optionally its `subresource`) in `namespace`, as the API server's authorizer answers.
async fn may(
    client: &kube::Client,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(group.to_string()),
                resource: Some(resource.to_string()),
                subresource,
                verb: Some(verb.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.unwrap().allowed
}

/// Applies each rendered object on its own (the panic names the one refused) and reads it
/// back; a field the API server's schema does not know would be pruned, so the object must
/// come back holding everything that was sent.
async fn apply_rendered(cluster: &Cluster, client: &kube::Client, objects: &[(String, Value)]) {
    for (template, object) in objects {
        let names = cluster
            .apply_yaml(client, "default", &object.to_string())
            .await;
        assert_eq!(names.len(), 1, "{template}");
        let kind = object["kind"].as_str().unwrap();
        let gvk = GroupVersionKind::try_from(&kube::core::TypeMeta {
            api_version: object["apiVersion"].as_str().unwrap().to_string(),
            kind: kind.to_string(),
        })
        .unwrap();
        let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
        let api: Api<DynamicObject> = match capabilities.scope {
            kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
            kube::discovery::Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                object["metadata"]["namespace"].as_str().unwrap(),
                &resource,
            ),
        };
        let stored = serde_json::to_value(api.get(&names[0]).await.unwrap()).unwrap();
        assert_contains(&stored, object, &format!("{template}: {kind}/{}", names[0]));
    }
}

/// Asserts that `actual` holds every field of `expected` with its value (defaults the
/// server added are fine; a field it dropped is not). Quantities and numbers the server
/// writes in canonical form are compared as it writes them only where they differ in
/// form alone, which the rendered chart avoids.
fn assert_contains(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (key, value) in e {
                let field = a
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}: the API server dropped `{key}`"));
                assert_contains(field, value, &format!("{at}.{key}"));
            }
        }
        (Value::Array(a), Value::Array(e)) => {
            assert_eq!(a.len(), e.len(), "{at}: {actual} != {expected}");
            for (i, (a, e)) in a.iter().zip(e).enumerate() {
                assert_contains(a, e, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{at}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_api_server_accepts_the_chart_and_the_example_and_enforces_the_role() {
    let cluster = Cluster::start();
    let admin = cluster.client().await;

    // The chart's CRDs, as Helm would install them before the templates.
    let loaded = helm(&["crds", chart().to_str().unwrap()]);
    for crd in loaded["crds"].as_array().unwrap() {
        cluster
            .apply_yaml(&admin, "default", crd["data"].as_str().unwrap())
            .await;
    }
    cluster.apply_crds().await; // the same CRDs again: waits until each is established
    cluster
        .apply_yaml(&admin, "default", SERVICE_MONITOR_CRD)
        .await;

    // Default values, released into `proto`; every option on, released into
    // `proto-chart-full` and also watching `proto-chart-team`.
    for ns in ["proto", "proto-chart-full", "proto-chart-team"] {
        cluster.create_namespace(ns).await;
    }
    let defaults = render("proto", None).unwrap();
    apply_rendered(&cluster, &admin, &defaults).await;
    let full = render("proto-chart-full", Some(&full_values())).unwrap();
    // The ServiceMonitor's CRD must be established before one is applied.
    wait_established(&admin, "servicemonitors.monitoring.coreos.com").await;
    apply_rendered(&cluster, &admin, &full).await;

    // The example company, server-side applied file by file in the order `kubectl apply -f`
    // takes them, and all there afterwards.
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(
        files[0].file_name().unwrap(),
        "00-namespace.yaml",
        "{files:?}"
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        cluster.apply_yaml(&admin, "proto", &text).await;
    }
    for (plural, count) in [
        ("companies", 1),
        ("products", 2),
        ("computers", 1),
        ("agents", 5),
        ("goals", 4),
    ] {
        let gvk = GroupVersionKind::gvk("proto.dev", "v1alpha1", "");
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), "proto", &resource);
        let listed = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(listed.items.len(), count, "{plural} in namespace proto");
    }

    // The chart's ServiceAccount, with a token from the TokenRequest API, may make exactly
    // the calls of the controller's Role in its namespace, and nothing else.
    let token = cluster.service_account_token("proto", "proto").await;
    let controller = cluster.client_with_token(&token).await;
    for (group, resource, verbs) in permissions(&kube_role()["rules"]) {
        for verb in &verbs {
            assert!(
                may(&controller, verb, &group, &resource, "proto").await,
                "{verb} {group}/{resource} refused to the chart's ServiceAccount"
            );
        }
    }
    for (verb, group, resource, ns) in [
        ("list", "", "secrets", "proto"),
        ("get", "", "secrets", "proto"),
        ("create", "", "pods", "proto"),
        ("delete", "proto.dev", "goals", "proto"),
        ("create", "proto.dev", "goals", "proto"),
        ("delete", "coordination.k8s.io", "leases", "proto"),
        ("list", "proto.dev", "goals", "proto-chart-team"),
        ("list", "proto.dev", "goals", "default"),
        (
            "list",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
            "proto",
        ),
    ] {
        assert!(
            !may(&controller, verb, group, resource, ns).await,
            "{verb} {group}/{resource} in {ns} allowed to the chart's ServiceAccount"
        );
    }
    // And real calls, not only reviews: its goals are listed, Secrets are refused.
    let gvk = GroupVersionKind::gvk("proto.dev", "v1alpha1", "Goal");
    let goals = kube::api::ApiResource::from_gvk_with_plural(&gvk, "goals");
    let listed = Api::<DynamicObject>::namespaced_with(controller.clone(), "proto", &goals)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 4);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(controller.clone(), "proto");
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e}"),
        other => panic!("listing secrets as the controller: {other:?}"),
    }

    // With every option on, the controller released into `proto-chart-full` watches
    // `proto-chart-team`: everything it needs is granted there (its Lease too), nothing at
    // home or elsewhere.
    let token = cluster
        .service_account_token("proto-chart-full", "proto-controller")
        .await;
    let controller = cluster.client_with_token(&token).await;
    for (group, resource, verbs) in permissions(&kube_role()["rules"]) {
        for verb in &verbs {
            assert!(
                may(&controller, verb, &group, &resource, "proto-chart-team").await,
                "{verb} {group}/{resource} refused in the watched namespace"
            );
            assert!(
                !may(&controller, verb, &group, &resource, "proto-chart-full").await,
                "{verb} {group}/{resource} allowed in the release's own namespace"
            );
        }
    }
    assert!(!may(&controller, "list", "proto.dev", "goals", "proto").await);
    assert!(!may(&controller, "get", "", "secrets", "proto-chart-team").await);
}
