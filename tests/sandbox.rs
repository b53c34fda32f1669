//! The sandbox of agent commands, tried for real: a sandboxed command cannot write outside its
//! workspace, read the controller's state, the company repository or `~/.ssh`, reach
//! 127.0.0.1 with the network off, signal the controller or another process, or read the
//! controller's environment; `read-only`
//! cannot write even its workspace; `network: true` and `sandbox: off` lift what they say;
//! the controller's own commands stay unconfined. Through the real `Local` computer, and once
//! through the real binary with a playbook's `run:` step.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use proto::computer::{Computer, Local, Origin, RunOutcome, RunRequest, Sandbox, Workspace};
use proto::spec::kinds::SandboxMode;
use tokio_util::sync::CancellationToken;

/// A host laid out as the controller's: a state directory holding the workspace (as the
/// default workdir does), a company repository, a home with `.ssh`, and a folder outside.
struct Host {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    workspace: Workspace,
}

impl Host {
    fn new() -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let state = root.join("state");
        let workspace = state.join("work/task");
        for dir in [&workspace, &root.join("company"), &root.join("home/.ssh")] {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::fs::write(state.join("store.db"), "state secret").unwrap();
        std::fs::write(root.join("company/company.yaml"), "company secret").unwrap();
        std::fs::write(root.join("home/.ssh/id_ed25519"), "ssh secret").unwrap();
        std::fs::write(root.join("outside/notes.txt"), "public notes").unwrap();
        Host {
            _tmp: tmp,
            workspace: Workspace::new(&workspace),
            root,
            state,
        }
    }

    fn sandbox(&self, mode: SandboxMode, network: bool) -> Option<Sandbox> {
        let mut sandbox = Sandbox::new(
            mode,
            network,
            &self.state,
            &self.root.join("company"),
            &self.state.join("work/.mirrors"),
        )?;
        // The real `~/.ssh` is denied too; this host's stands in for it in the checks.
        sandbox.denied.push(self.root.join("home/.ssh"));
        Some(sandbox)
    }

    fn local(&self, mode: SandboxMode, network: bool) -> Local {
        Local::new("local", self.state.join("work")).sandboxed(self.sandbox(mode, network))
    }

    fn path(&self, relative: &str) -> String {
        self.root.join(relative).display().to_string()
    }
}

async fn run_as(local: &Local, ws: &Workspace, command: &str, origin: Origin) -> RunOutcome {
    let request = RunRequest {
        command: command.to_string(),
        cwd: String::new(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(60),
        origin,
        stdin: None,
    };
    local
        .run(ws, &request, None, &CancellationToken::new())
        .await
        .unwrap()
}

async fn run(local: &Local, ws: &Workspace, command: &str) -> RunOutcome {
    run_as(local, ws, command, Origin::Agent).await
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[tokio::test]
async fn workspace_write_writes_only_the_workspace() {
    let host = Host::new();
    let local = host.local(SandboxMode::WorkspaceWrite, false);
    let ws = &host.workspace;

    let inside = run(
        &local,
        ws,
        "echo work > made.txt && echo t > \"$TMPDIR/t\" && cat made.txt",
    )
    .await;
    assert!(inside.success(), "{}", inside.summary());
    assert_eq!(inside.stdout, "work\n");
    // TMPDIR is the workspace's scratch folder, which git ignores.
    let tmp = run(&local, ws, "echo \"$TMPDIR\"; cat .proto-tmp/.gitignore").await;
    assert_eq!(
        tmp.stdout,
        format!("{}/.proto-tmp/tmp\n*\n", ws.root().display())
    );

    for target in [
        host.path("outside/escaped"),
        host.path("escaped"),
        host.path("state/escaped"),
        host.path("state/work/other-task"),
    ] {
        let out = run(&local, ws, &format!("echo x > {}", quote(&target))).await;
        assert!(!out.success(), "{target}: {}", out.stdout);
        assert!(!Path::new(&target).exists(), "{target} was written");
    }
    let moved = run(
        &local,
        ws,
        &format!("mv made.txt {}", quote(&host.path("outside/moved"))),
    )
    .await;
    assert!(!moved.success());
    assert!(!Path::new(&host.path("outside/moved")).exists());
    let changed = run(
        &local,
        ws,
        &format!("echo changed > {}", quote(&host.path("outside/notes.txt"))),
    )
    .await;
    assert!(!changed.success());
    assert_eq!(
        std::fs::read_to_string(host.path("outside/notes.txt")).unwrap(),
        "public notes"
    );
}

#[tokio::test]
async fn the_state_the_company_repository_and_ssh_keys_cannot_be_read() {
    let host = Host::new();
    let local = host.local(SandboxMode::WorkspaceWrite, false);
    let ws = &host.workspace;
    for secret in [
        "state/store.db",
        "company/company.yaml",
        "home/.ssh/id_ed25519",
    ] {
        let out = run(&local, ws, &format!("cat {}", quote(&host.path(secret)))).await;
        assert!(!out.success(), "{secret} was read: {}", out.stdout);
        assert!(!out.stdout.contains("secret"), "{secret}: {}", out.stdout);
        assert!(
            out.stderr.contains("Permission denied"),
            "{secret}: {}",
            out.stderr
        );
    }
    // Everything else reads as usual, and names can be listed everywhere.
    let public = run(
        &local,
        ws,
        &format!(
            "cat {} && head -c0 /etc/passwd && ls / >/dev/null && ls {}",
            quote(&host.path("outside/notes.txt")),
            quote(&host.path("state"))
        ),
    )
    .await;
    assert!(public.success(), "{}", public.summary());
    assert!(
        public.stdout.starts_with("public notes"),
        "{}",
        public.stdout
    );
    assert!(public.stdout.contains("store.db"), "{}", public.stdout);
}

#[tokio::test]
async fn read_only_cannot_write_even_the_workspace() {
    let host = Host::new();
    let local = host.local(SandboxMode::ReadOnly, false);
    let ws = &host.workspace;
    std::fs::write(ws.root().join("readme.txt"), "read me").unwrap();
    let out = run(&local, ws, "echo x > made.txt").await;
    assert!(!out.success());
    assert!(!ws.root().join("made.txt").exists());
    let read = run(&local, ws, "cat readme.txt > /dev/null && cat readme.txt").await;
    assert!(read.success(), "{}", read.summary());
    assert_eq!(read.stdout, "read me");
    let secret = run(
        &local,
        ws,
        &format!("cat {}", quote(&host.path("state/store.db"))),
    )
    .await;
    assert!(!secret.success());
}

/// A command that connects to `port` on 127.0.0.1 and says whether it could.
fn connect(port: u16) -> String {
    format!(
        "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 5); print(\"connected\")'"
    )
}

#[tokio::test]
async fn the_network_is_off_unless_declared() {
    let host = Host::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ws = &host.workspace;

    let off = host.local(SandboxMode::WorkspaceWrite, false);
    let refused = run(&off, ws, &connect(port)).await;
    assert!(!refused.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("Permission denied"),
        "{}",
        refused.stderr
    );
    let bind = run(
        &off,
        ws,
        "python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 0))'",
    )
    .await;
    assert!(!bind.success(), "a server cannot listen either");
    let udp = run(
        &off,
        ws,
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"127.0.0.1\", 9))'",
    )
    .await;
    assert!(!udp.success(), "UDP is off too");
    assert!(udp.stderr.contains("Permission denied"), "{}", udp.stderr);
    let unix = run(
        &off,
        ws,
        "python3 -c 'import socket; socket.socketpair(socket.AF_UNIX); print(\"local\")'",
    )
    .await;
    assert_eq!(
        unix.stdout,
        "local\n",
        "unix sockets stay: {}",
        unix.summary()
    );

    let on = host.local(SandboxMode::WorkspaceWrite, true);
    let reached = run(&on, ws, &connect(port)).await;
    assert!(reached.success(), "{}", reached.summary());
    assert_eq!(reached.stdout, "connected\n");
    // The file system stays confined with the network on.
    let secret = run(
        &on,
        ws,
        &format!("cat {}", quote(&host.path("state/store.db"))),
    )
    .await;
    assert!(!secret.success());
}

#[tokio::test]
async fn commands_cannot_signal_the_controller_or_other_processes() {
    let host = Host::new();
    let local = host.local(SandboxMode::WorkspaceWrite, true);
    let ws = &host.workspace;
    let mut victim = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    // The command's parent is the controller (here, this test's process).
    let controller = run(&local, ws, "kill -0 $PPID").await;
    assert!(!controller.success(), "the controller could be signalled");
    // Nor can it read the controller's environment (its model keys) through /proc.
    let environ = run(&local, ws, "cat /proc/$PPID/environ").await;
    assert!(
        !environ.success() && environ.stdout.is_empty(),
        "the controller's environment was read"
    );
    let other = run(&local, ws, &format!("kill -TERM {}", victim.id())).await;
    assert!(!other.success(), "another process could be signalled");
    assert!(
        victim.try_wait().unwrap().is_none(),
        "the victim was killed"
    );
    // Its own processes it can still stop.
    let own = run(&local, ws, "sleep 30 & kill $! && wait $!; echo $?").await;
    assert_eq!(own.stdout, "143\n", "{}", own.summary());

    victim.kill().unwrap();
    victim.wait().unwrap();
}

#[tokio::test]
async fn off_and_the_controllers_own_commands_are_not_confined() {
    let host = Host::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ws = &host.workspace;
    let escapes = format!(
        "echo x > {} && cat {} {} > /dev/null && kill -0 $PPID && {}",
        quote(&host.path("outside/escaped")),
        quote(&host.path("state/store.db")),
        quote(&host.path("home/.ssh/id_ed25519")),
        connect(port)
    );

    assert!(host.sandbox(SandboxMode::Off, false).is_none());
    let off = host.local(SandboxMode::Off, false);
    let out = run(&off, ws, &escapes).await;
    assert!(out.success(), "{}", out.summary());
    std::fs::remove_file(host.path("outside/escaped")).unwrap();

    // Delivery's git and goal checks are the company's, not an agent's.
    let sandboxed = host.local(SandboxMode::ReadOnly, false);
    let out = run_as(&sandboxed, ws, &escapes, Origin::Controller).await;
    assert!(out.success(), "{}", out.summary());
    assert!(Path::new(&host.path("outside/escaped")).exists());
}

#[test]
fn a_kernel_without_landlock_refuses_a_sandboxed_computer_where_it_is_declared() {
    let tmp = tempfile::tempdir().unwrap();
    let company = company::small_company(tmp.path(), "");
    let (spec, _) = proto::spec::load_and_validate(&proto::spec::DirTree::new(&company)).unwrap();
    let errors = proto::computer::sandbox::unsupported(&spec, 3);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.contains("company.yaml:"), "{text}");
    assert!(text.contains("Computer/here"), "{text}");
    assert!(text.contains("workspace-write"), "{text}");
    assert!(text.contains("Landlock ABI 3"), "{text}");
    assert!(
        text.contains("signal and abstract unix socket scoping"),
        "{text}"
    );
    // This kernel has what the sandbox needs: nothing is refused.
    let here = proto::computer::sandbox::unsupported(&spec, proto::computer::sandbox::kernel_abi());
    assert!(here.is_empty(), "{here:?}");

    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    std::fs::write(
        company.join("company.yaml"),
        yaml.replace("capacity: 2", "capacity: 2, sandbox: off"),
    )
    .unwrap();
    let (spec, _) = proto::spec::load_and_validate(&proto::spec::DirTree::new(&company)).unwrap();
    assert!(proto::computer::sandbox::unsupported(&spec, 0).is_empty());
}

/// A playbook `run:` step that tries every escape and writes what happened to `report.txt`
/// in its workspace; the controller delivers it to the product's branch.
fn escaping_goal(home: &Path, state: &Path, company: &Path, port: u16) -> String {
    let script = format!(
        "r=report.txt\n\
         try() {{ if sh -c \"$2\" >/dev/null 2>&1; then echo \"$1 allowed\" >> $r; else echo \"$1 refused\" >> $r; fi; }}\n\
         try write-home 'echo x > {home}/escaped'\n\
         try read-state 'cat {state}/secret'\n\
         try read-company 'cat {company}/company.yaml'\n\
         try read-ssh 'cat {home}/.ssh/id_test'\n\
         try signal-controller 'kill -0 '$PPID\n\
         try read-controller-env 'cat /proc/'$PPID'/environ'\n\
         try connect \"python3 -c 'import socket; socket.create_connection((\\\"127.0.0.1\\\", {port}), 5)'\"\n\
         try git-status 'git status --short'\n\
         true\n",
        home = home.display(),
        state = state.display(),
        company = company.display(),
    );
    let indented: String = script.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "---\napiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: escape}}\nspec:\n  product: app\n  owner: ceo\n  description: The escapes are reported.\n  check: {{file: {{path: report.txt}}}}\n  playbook:\n    - run: |\n{indented}    - commit: {{message: Report the escapes}}\n"
    )
}

#[test]
fn a_playbook_step_run_by_the_controller_is_confined() {
    let tmp = tempfile::tempdir().unwrap();
    let home = std::fs::canonicalize(tmp.path()).unwrap();
    let state = home.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("secret"), "state secret").unwrap();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_test"), "ssh secret").unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let company_dir = home.join("company");
    let company = company::small_company(&home, &escaping_goal(&home, &state, &company_dir, port));

    let out = cli::run_command(&home, &company, &state).output().unwrap();
    assert!(out.status.success(), "{}", cli::text(&out));
    let report = cli::git(&home.join("app.git"), &["show", "main:report.txt"]);
    assert_eq!(
        report,
        "write-home refused\nread-state refused\nread-company refused\nread-ssh refused\n\
         signal-controller refused\nread-controller-env refused\nconnect refused\n\
         git-status allowed",
        "git works in the workspace; nothing else gets out"
    );
    assert!(!home.join("escaped").exists());
}
