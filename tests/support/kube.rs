//! A real Kubernetes API server for tests: Debian's etcd and a kube-apiserver built once by
//! `scripts/kube-apiserver.sh` (its path in `PROTO_KUBE_APISERVER`, which `scripts/test.sh`
//! exports), started on free loopback ports with RBAC authorization, a static admin token in
//! `system:masters` and service-account tokens (TokenRequest) enabled. There is no
//! scheduler, controller manager or kubelet: pods never run, and service accounts are made
//! by the test. Dropping the [`Cluster`] stops the API server, then etcd.

#![allow(dead_code)] // each test binary uses its own part of the support

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use kube::{Client, Config};

/// The admin's bearer token; the API server reads it from its static token file.
const ADMIN_TOKEN: &str = "proto-test-admin-token";
/// The audience service-account tokens are issued for and checked against.
const AUDIENCE: &str = "https://kubernetes.default.svc";

/// An API server on etcd, both owned by the test.
pub struct Cluster {
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    dir: tempfile::TempDir,
    etcd: Child,
    apiserver: Child,
}

/// The API server's binary: `PROTO_KUBE_APISERVER`, else where the build script caches it.
fn apiserver_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PROTO_KUBE_APISERVER") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("PROTO_KUBE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let root = PathBuf::from("/var/cache/proto-kube");
            if root.exists() {
                root
            } else {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(".cache/proto-kube")
            }
        });
    let binary = cache.join("kube-apiserver");
    assert!(
        binary.exists(),
        "no kube-apiserver at {}: run scripts/kube-apiserver.sh (scripts/test.sh does)",
        binary.display()
    );
    binary
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the API server answers `url` with 200, asked from a thread of its own so that a
/// test already inside a runtime may call it.
fn ready(url: &str) -> bool {
    let url = url.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let client = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            client
                .get(&url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
    })
    .join()
    .unwrap_or(false)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Starts etcd in `dir` and waits until it listens, answering it and its client URL. Its
/// ports are picked free a moment before it binds them, so another test's process can take
/// one first: etcd then exits, and is started again on other ports (at most three times).
fn start_etcd(dir: &Path) -> (Child, String) {
    for _ in 0..3 {
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let _ = std::fs::remove_dir_all(dir.join("etcd"));
        let mut etcd = Command::new("etcd")
            .args(["--data-dir", dir.join("etcd").to_str().unwrap()])
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("etcd.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("etcd.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("etcd: {e} (scripts/kube-apiserver.sh installs it)"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if etcd_healthy(client_port) {
                return (etcd, client_url);
            }
            if let Ok(Some(status)) = etcd.try_wait() {
                eprintln!(
                    "etcd exited ({status}), starting it on other ports:\n{}",
                    log_tail(&dir.join("etcd.err"))
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not listening after 30 s:\n{}",
                log_tail(&dir.join("etcd.err"))
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!(
        "etcd did not start in three tries:\n{}",
        log_tail(&dir.join("etcd.err"))
    );
}

/// Whether the etcd at `port` answers its health check (a process that took the port
/// first would not say so).
fn etcd_healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut answer = String::new();
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut answer))
        .is_ok()
        && answer.contains("\"health\":\"true\"")
}

impl Cluster {
    /// Starts etcd and the API server and waits until the server is ready.
    pub fn start() -> Cluster {
        let apiserver_bin = apiserver_binary();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(d, "openssl", &["genrsa", "-out", "sa.key", "2048"]);
        run(
            d,
            "openssl",
            &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        );
        std::fs::write(
            d.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .unwrap();

        let (etcd, client_url) = start_etcd(d);

        let port = free_port();
        let apiserver = Command::new(&apiserver_bin)
            .args(["--etcd-servers", &client_url])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--advertise-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &port.to_string()])
            .args(["--cert-dir", d.join("certs").to_str().unwrap()])
            .args(["--token-auth-file", d.join("tokens.csv").to_str().unwrap()])
            .args(["--authorization-mode", "RBAC"])
            .args(["--service-cluster-ip-range", "10.96.0.0/24"])
            .args(["--service-account-issuer", AUDIENCE])
            .args([
                "--service-account-key-file",
                d.join("sa.pub").to_str().unwrap(),
            ])
            .args([
                "--service-account-signing-key-file",
                d.join("sa.key").to_str().unwrap(),
            ])
            .args(["--api-audiences", AUDIENCE])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("apiserver.log")).unwrap())
            .stderr(std::fs::File::create(d.join("apiserver.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", apiserver_bin.display()));
        let mut cluster = Cluster {
            server: format!("https://127.0.0.1:{port}"),
            dir,
            etcd,
            apiserver,
        };
        cluster.wait_ready();
        cluster
    }

    /// Waits for `/readyz` (the server bootstraps its RBAC roles before it says ready).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let url = format!("{}/readyz", self.server);
        loop {
            if ready(&url) {
                return;
            }
            if let Ok(Some(status)) = self.apiserver.try_wait() {
                panic!(
                    "kube-apiserver exited ({status}):\n{}\netcd:\n{}",
                    log_tail(&self.dir.path().join("apiserver.err")),
                    log_tail(&self.dir.path().join("etcd.err"))
                );
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready after 90 s:\n{}\netcd:\n{}",
                log_tail(&self.dir.path().join("apiserver.err")),
                log_tail(&self.dir.path().join("etcd.err"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The folder the cluster's files (logs, kubeconfigs) live in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A kubeconfig that authenticates with `token` and defaults to `namespace`.
    pub fn kubeconfig(&self, token: &str, namespace: &str) -> PathBuf {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let path = self.dir.path().join(format!("kubeconfig-{n}.yaml"));
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\n\
             users:\n- name: test\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: {namespace}\n",
            self.server
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The admin's kubeconfig (namespace `default`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.kubeconfig(ADMIN_TOKEN, "default")
    }

    /// The admin's bearer token.
    pub fn admin_token(&self) -> &'static str {
        ADMIN_TOKEN
    }

    /// A client authenticated as the admin.
    pub async fn client(&self) -> Client {
        self.client_with_token(ADMIN_TOKEN).await
    }

    /// A client authenticated with `token`.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let path = self.kubeconfig(token, "default");
        let kubeconfig = Kubeconfig::read_from(&path).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        Client::try_from(config).unwrap()
    }

    /// Applies the repository's CRDs (`crds/*.yaml`) and waits until each is established.
    pub async fn apply_crds(&self) {
        let client = self.client().await;
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut names = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(&crds)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            names.extend(self.apply_yaml(&client, "default", &text).await);
        }
        let api: Api<CustomResourceDefinition> = Api::all(client);
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in names {
            loop {
                let crd = api.get(&name).await.unwrap();
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                assert!(Instant::now() < deadline, "CRD {name} not established");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Creates a namespace (no error when it exists).
    pub async fn create_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("namespace {name}: {e}"),
        }
    }

    /// Makes the service account `namespace/name` (if missing) and returns a token for it
    /// from the TokenRequest API, valid for an hour.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let client = self.client().await;
        let api: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let account: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        match api.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("service account {namespace}/{name}: {e}"),
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![AUDIENCE.to_string()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let issued = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("token for {namespace}/{name}: {e}"));
        issued.status.and_then(|s| s.token).unwrap()
    }

    /// Server-side applies every document of a multi-document YAML (any kind; namespaced
    /// ones into `namespace` unless they name their own) as `kubectl apply --server-side`
    /// does, with field manager `proto-tests`. Returns the applied objects' names.
    pub async fn apply_yaml(&self, client: &Client, namespace: &str, yaml: &str) -> Vec<String> {
        let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)
            .unwrap_or_else(|e| panic!("YAML to apply: {e}\n{yaml}"));
        let mut names = Vec::new();
        for document in documents.into_iter().filter(|d| !d.is_null()) {
            let object: DynamicObject = serde_json::from_value(document.clone())
                .unwrap_or_else(|e| panic!("not a Kubernetes object ({e}): {document}"));
            let types = object
                .types
                .clone()
                .unwrap_or_else(|| panic!("no apiVersion/kind: {document}"));
            let gvk = GroupVersionKind::try_from(&types).unwrap();
            let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("{}/{}: {e}", types.api_version, types.kind));
            let name = object.metadata.name.clone().unwrap();
            let api: Api<DynamicObject> = match capabilities.scope {
                Scope::Cluster => Api::all_with(client.clone(), &resource),
                Scope::Namespaced => Api::namespaced_with(
                    client.clone(),
                    object.metadata.namespace.as_deref().unwrap_or(namespace),
                    &resource,
                ),
            };
            api.patch(
                &name,
                &PatchParams::apply("proto-tests").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", types.kind));
            names.push(name);
        }
        names
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The API server first: it holds watches open on etcd.
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
