//! The MCP client against real MCP servers from npm: `@modelcontextprotocol/server-filesystem`
//! over stdio and `@modelcontextprotocol/server-everything` over stdio and streamable HTTP.
//! `scripts/test.sh` installs them under `target/npm` and exports `PROTO_TEST_NPM`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::computer::{Local, Workspace};
use proto::mcp::{McpClient, McpError, McpPool, qualified_name, split_qualified_name};
use proto::spec::claude::{McpServer, McpTransport};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `server`, a stdio one started on this host in the workspace `cwd`.
async fn connect(server: &McpServer, cwd: &Path, timeout: Duration) -> Result<McpClient, McpError> {
    let local = Local::new("here", cwd.join(".work"));
    McpClient::connect(server, &local, &Workspace::new(cwd), timeout).await
}

/// A pool whose stdio servers start on this host in the workspace `cwd`.
fn pool(servers: impl IntoIterator<Item = McpServer>, cwd: &Path, timeout: Duration) -> McpPool {
    let local = Arc::new(Local::new("here", cwd.join(".work")));
    McpPool::new(servers, local, Workspace::new(cwd), timeout)
}

/// Where the npm packages are, failing with what to do when they are not.
fn npm() -> PathBuf {
    let prefix = std::env::var_os("PROTO_TEST_NPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm"));
    let modules = prefix.join("node_modules/@modelcontextprotocol");
    for package in ["server-filesystem", "server-everything"] {
        assert!(
            modules.join(package).join("package.json").is_file(),
            "@modelcontextprotocol/{package} is not installed under {}: run scripts/test.sh \
             (it installs Node.js and the MCP servers the tests use)",
            prefix.display()
        );
    }
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "`node` is not on PATH: run scripts/test.sh (it installs Node.js)"
    );
    prefix
}

fn stdio(name: &str, command: impl Into<String>, args: &[&str]) -> McpServer {
    McpServer {
        name: name.into(),
        transport: McpTransport::Stdio {
            command: command.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: BTreeMap::new(),
        },
        file: ".mcp.json".into(),
    }
}

/// server-filesystem over stdio, allowed to touch `root` only.
fn filesystem(name: &str, root: &Path) -> McpServer {
    let bin = npm().join("node_modules/.bin/mcp-server-filesystem");
    stdio(name, bin.to_str().unwrap(), &[root.to_str().unwrap()])
}

/// A running server-everything over streamable HTTP on a free loopback port; killed on drop.
struct Everything {
    url: String,
    _child: tokio::process::Child,
}

impl Everything {
    async fn start() -> Everything {
        let index =
            npm().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The installed version picks its transport from argv[2] and its port from $PORT.
        let mut child = tokio::process::Command::new("node")
            .arg(&index)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("server-everything exited before listening: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server-everything did not listen on port {port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Everything {
            url: format!("http://127.0.0.1:{port}/mcp"),
            _child: child,
        }
    }

    fn server(&self, name: &str) -> McpServer {
        McpServer {
            name: name.into(),
            transport: McpTransport::Http {
                url: self.url.clone(),
                headers: BTreeMap::from([("X-Proto-Test".into(), "yes".into())]),
            },
            file: ".mcp.json".into(),
        }
    }
}

#[tokio::test]
async fn filesystem_over_stdio_writes_reads_and_refuses_outside_its_root() {
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().canonicalize().unwrap();
    let client = connect(&filesystem("files", &root_path), root.path(), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(client.server(), "files");

    let tools = client.list_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names.contains(&"read_text_file") || names.contains(&"read_file"),
        "{names:?}"
    );
    assert!(names.contains(&"write_file"), "{names:?}");
    let write = tools.iter().find(|t| t.name == "write_file").unwrap();
    assert_eq!(write.qualified_name, "mcp__files__write_file");
    assert_eq!(write.server, "files");
    assert!(!write.description.is_empty());
    assert_eq!(write.input_schema["type"], "object");
    assert!(write.input_schema["properties"]["path"].is_object());

    let file = root_path.join("note.txt");
    let written = client
        .call(
            "write_file",
            json!({"path": file.to_str().unwrap(), "content": "hello from proto\n"}),
        )
        .await
        .unwrap();
    assert!(!written.is_error, "{}", written.content);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "hello from proto\n"
    );

    let read_tool = if names.contains(&"read_text_file") {
        "read_text_file"
    } else {
        "read_file"
    };
    let read = client
        .call(read_tool, json!({"path": file.to_str().unwrap()}))
        .await
        .unwrap();
    assert!(!read.is_error, "{}", read.content);
    assert!(
        read.content.contains("hello from proto"),
        "{}",
        read.content
    );

    // Outside the allowed folder: the tool runs and reports failure.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "not for agents").unwrap();
    let refused = client
        .call(read_tool, json!({"path": secret.to_str().unwrap()}))
        .await
        .unwrap();
    assert!(refused.is_error, "{}", refused.content);
    assert!(!refused.content.contains("not for agents"));
    assert!(!refused.content.is_empty());

    client.close().await;
}

#[tokio::test]
async fn everything_over_streamable_http_lists_and_echoes() {
    let everything = Everything::start().await;
    let cwd = tempfile::tempdir().unwrap();
    let client = connect(&everything.server("everything"), cwd.path(), TIMEOUT)
        .await
        .unwrap();

    let tools = client.list_tools().await.unwrap();
    let echo = tools
        .iter()
        .find(|t| t.name == "echo")
        .unwrap_or_else(|| panic!("no echo tool in {tools:?}"));
    assert_eq!(echo.qualified_name, "mcp__everything__echo");
    assert!(echo.input_schema["properties"]["message"].is_object());

    let result = client
        .call("echo", json!({"message": "hello over http"}))
        .await
        .unwrap();
    assert!(!result.is_error);
    assert_eq!(result.content, "Echo: hello over http");

    // Non-text content is summarized rather than dumped into the model's context.
    let image = client.call("get-tiny-image", json!({})).await.unwrap();
    assert!(
        image.content.contains("[image: image/png"),
        "{}",
        image.content
    );

    // Arguments the tool's schema rejects fail the call, whichever way the server says so.
    match client.call("echo", json!({"message": 42})).await {
        Ok(result) => assert!(result.is_error, "{}", result.content),
        Err(e) => assert!(matches!(e, McpError::Refused { .. }), "{e}"),
    }
    client.close().await;
}

#[tokio::test]
async fn stdio_servers_see_their_declared_env_but_not_the_controllers() {
    let index = npm().join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let mut server = stdio("everything", "node", &[index.to_str().unwrap(), "stdio"]);
    if let McpTransport::Stdio { env, .. } = &mut server.transport {
        env.insert("PROTO_DECLARED".into(), "from .mcp.json".into());
    }
    let cwd = tempfile::tempdir().unwrap();
    let client = connect(&server, cwd.path(), TIMEOUT).await.unwrap();
    let result = client
        .call("get-env", serde_json::Value::Null)
        .await
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&result.content).unwrap();
    assert_eq!(env["PROTO_DECLARED"], "from .mcp.json");
    assert!(env["PATH"].is_string());
    // Cargo sets this for the test process; it stands for any controller secret.
    if std::env::var_os("CARGO_MANIFEST_DIR").is_some() {
        assert!(env.get("CARGO_MANIFEST_DIR").is_none(), "{env}");
    }
}

#[tokio::test]
async fn pool_connects_lazily_reuses_and_routes_by_qualified_name() {
    let everything = Everything::start().await;
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().canonicalize().unwrap();
    let pool = pool(
        [
            filesystem("local-fs_1", &root_path),
            everything.server("every_thing"),
        ],
        root.path(),
        TIMEOUT,
    );
    assert_eq!(
        pool.servers().collect::<Vec<_>>(),
        ["every_thing", "local-fs_1"]
    );

    let (tools, errors) = pool.tools().await;
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<&str> = tools.iter().map(|t| t.qualified_name.as_str()).collect();
    assert!(names.contains(&"mcp__local-fs_1__write_file"), "{names:?}");
    assert!(names.contains(&"mcp__every_thing__echo"), "{names:?}");

    let file = root_path.join("routed.txt");
    let written = pool
        .call(
            "mcp__local-fs_1__write_file",
            json!({"path": file.to_str().unwrap(), "content": "routed"}),
        )
        .await
        .unwrap();
    assert!(!written.is_error, "{}", written.content);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "routed");

    let echoed = pool
        .call("mcp__every_thing__echo", json!({"message": "via the pool"}))
        .await
        .unwrap();
    assert_eq!(echoed.content, "Echo: via the pool");

    // One connection per server, reused.
    let a = pool.client("local-fs_1").await.unwrap();
    let b = pool.client("local-fs_1").await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[tokio::test]
async fn pool_names_unknown_tools_and_servers() {
    let root = tempfile::tempdir().unwrap();
    let pool = pool([filesystem("fs", root.path())], root.path(), TIMEOUT);

    let e = pool
        .call("mcp__fs__no_such_tool", json!({}))
        .await
        .unwrap_err();
    match &e {
        McpError::UnknownTool {
            server,
            tool,
            known,
        } => {
            assert_eq!((server.as_str(), tool.as_str()), ("fs", "no_such_tool"));
            assert!(known.iter().any(|k| k == "write_file"));
        }
        other => panic!("expected UnknownTool, got {other:?}"),
    }
    assert!(e.to_string().contains("no_such_tool"), "{e}");

    let e = pool
        .call("mcp__nope__read_file", json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, McpError::UnknownServer { server, .. } if server == "nope"),
        "{e:?}"
    );
    assert!(e.to_string().contains("fs"), "{e}");

    let e = pool.call("Read", json!({})).await.unwrap_err();
    assert!(matches!(e, McpError::NotMcpTool { .. }), "{e:?}");
}

#[tokio::test]
async fn a_missing_command_is_a_spawn_error_naming_it() {
    let cwd = tempfile::tempdir().unwrap();
    let server = stdio("ghost", "proto-no-such-mcp-server", &["--stdio"]);
    let e = connect(&server, cwd.path(), TIMEOUT).await.unwrap_err();
    assert!(matches!(e, McpError::Spawn { .. }), "{e:?}");
    let message = e.to_string();
    assert!(message.contains("proto-no-such-mcp-server"), "{message}");
    assert!(message.contains("ghost"), "{message}");

    // Through a pool, the same error; the next call tries again rather than caching it.
    let pool = pool([server], cwd.path(), TIMEOUT);
    for _ in 0..2 {
        let e = pool
            .call("mcp__ghost__anything", json!({}))
            .await
            .unwrap_err();
        assert!(matches!(e, McpError::Spawn { .. }), "{e:?}");
    }
    let (tools, errors) = pool.tools().await;
    assert!(tools.is_empty());
    assert_eq!(errors.len(), 1);
}

#[tokio::test]
async fn a_server_that_dies_at_start_is_a_connect_error_with_its_stderr() {
    let cwd = tempfile::tempdir().unwrap();
    let server = stdio(
        "broken",
        "sh",
        &["-c", "echo 'missing API token' >&2; exit 3"],
    );
    let e = connect(&server, cwd.path(), TIMEOUT).await.unwrap_err();
    assert!(matches!(e, McpError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("missing API token"), "{e}");
}

#[tokio::test]
async fn a_silent_server_times_out_and_is_killed() {
    let cwd = tempfile::tempdir().unwrap();
    let pidfile = cwd.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 60", pidfile.display());
    let server = stdio("silent", "sh", &["-c", &script]);
    let started = Instant::now();
    let e = connect(&server, cwd.path(), Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(matches!(e, McpError::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        assert!(Instant::now() < deadline, "server {pid} still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn qualified_names_split_at_the_first_double_underscore_after_the_prefix() {
    assert_eq!(
        qualified_name("git-hub_2", "create_issue"),
        "mcp__git-hub_2__create_issue"
    );
    assert_eq!(
        split_qualified_name("mcp__git-hub_2__create_issue"),
        Some(("git-hub_2", "create_issue"))
    );
    assert_eq!(
        split_qualified_name("mcp__fs__read__text"),
        Some(("fs", "read__text"))
    );
    assert_eq!(split_qualified_name("mcp__fs"), None);
    assert_eq!(split_qualified_name("mcp____tool"), None);
    assert_eq!(split_qualified_name("mcp__fs__"), None);
    assert_eq!(split_qualified_name("Read"), None);
}

#[tokio::test]
async fn dropping_a_stdio_client_kills_the_server_and_what_it_started() {
    let root = tempfile::tempdir().unwrap();
    let bin = npm().join("node_modules/.bin/mcp-server-filesystem");
    let pidfile = root.path().join("pid");
    // A launcher that stays in between, as `npx` does: the server is its grandchild.
    let script = format!(
        "echo $$ > {}; {} {}; echo launcher-done",
        pidfile.display(),
        bin.display(),
        root.path().display()
    );
    let client = connect(&stdio("fs", "sh", &["-c", &script]), root.path(), TIMEOUT)
        .await
        .unwrap();
    assert!(!client.list_tools().await.unwrap().is_empty());
    let launcher: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).unwrap();
    let server: i32 = children.split_whitespace().next().unwrap().parse().unwrap();

    drop(client);
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in [server, launcher] {
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(
                Instant::now() < deadline,
                "process {pid} survived the client"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn an_http_server_nobody_serves_is_a_connect_error() {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = McpServer {
        name: "nowhere".into(),
        transport: McpTransport::Http {
            url: format!("http://127.0.0.1:{port}/mcp"),
            headers: BTreeMap::new(),
        },
        file: ".mcp.json".into(),
    };
    let cwd = tempfile::tempdir().unwrap();
    let e = connect(&server, cwd.path(), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(e, McpError::Connect { .. }), "{e:?}");
    let message = e.to_string();
    assert!(
        message.contains("nowhere") && message.contains(&port.to_string()),
        "{message}"
    );
}

#[tokio::test]
async fn a_header_that_is_not_http_is_a_config_error() {
    let server = McpServer {
        name: "bad".into(),
        transport: McpTransport::Http {
            url: "http://127.0.0.1:9/mcp".into(),
            headers: BTreeMap::from([("Authorization".into(), "Bearer a\nb".into())]),
        },
        file: ".mcp.json".into(),
    };
    let cwd = tempfile::tempdir().unwrap();
    let e = connect(&server, cwd.path(), TIMEOUT).await.unwrap_err();
    assert!(matches!(e, McpError::Config { .. }), "{e:?}");
    assert!(e.to_string().contains("Authorization"), "{e}");
}

#[tokio::test]
async fn a_pool_reconnects_after_its_server_died() {
    let root = tempfile::tempdir().unwrap();
    let bin = npm().join("node_modules/.bin/mcp-server-filesystem");
    let pidfile = root.path().join("pid");
    // Records the launcher's pid, which is also the server's process group.
    let script = format!(
        "echo $$ > {}; {} {}; echo 'server gone' >&2",
        pidfile.display(),
        bin.display(),
        root.path().display()
    );
    let pool = pool([stdio("fs", "sh", &["-c", &script])], root.path(), TIMEOUT);
    let (tools, errors) = pool.tools().await;
    assert!(errors.is_empty() && !tools.is_empty(), "{errors:?}");
    let first = pool.client("fs").await.unwrap();

    let group: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(group),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let e = pool
        .call("mcp__fs__list_allowed_directories", json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, McpError::Protocol { .. }), "{e:?}");

    // The broken connection was dropped: the next call starts the server again.
    let listed = pool
        .call("mcp__fs__list_allowed_directories", json!({}))
        .await
        .unwrap();
    assert!(!listed.is_error, "{}", listed.content);
    assert!(!Arc::ptr_eq(&first, &pool.client("fs").await.unwrap()));
}
