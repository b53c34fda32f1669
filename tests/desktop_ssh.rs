//! Desktops on SSH computers, against a real OpenSSH server and a real Xvfb with a real
//! xterm: the display is driven by `proto worker --stdio` started on the remote over the
//! SSH channel, the binary copied there by SFTP on first use only (a second computer finds
//! it by name and hash), and started again when it died. A replayed model session on the
//! SSH computer types a command into the xterm through the `Computer` tool, and the
//! command's effect is checked on disk.
//!
//! The remote is this host, seen through a server whose sessions have a fresh `tmpfs` over
//! `~/.cache/proto`, so the copies of the (large, debug) binary vanish with the server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/mock_llm.rs"]
mod mock_llm;
#[path = "support/sshd.rs"]
mod sshd;
#[path = "support/xvfb.rs"]
mod xvfb;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use proto::computer::desktop::{Input, Point, Size};
use proto::computer::{Computer, Origin, RunRequest, Ssh, Workspace};
use serde_json::json;
use sshd::{Sshd, whoami};
use tokio_util::sync::CancellationToken;

use cli::{get_json, git, run_command, text, wait_for};

/// A server whose sessions see an empty `~/.cache/proto` of their own.
fn sshd_with_a_private_cache() -> Sshd {
    let home = PathBuf::from(std::env::var("HOME").unwrap());
    let cache = home.join(".cache/proto");
    std::fs::create_dir_all(&cache).unwrap();
    Sshd::start_hiding(&cache)
}

/// The controller's binary, which is what an SSH computer's desktop runs remotely.
fn worker_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_proto"))
}

/// Runs `command` on the remote (in `ws`) and returns its trimmed output.
async fn remote(ssh: &Ssh, ws: &Workspace, command: &str) -> String {
    let request = RunRequest {
        command: command.into(),
        cwd: String::new(),
        env: BTreeMap::new(),
        timeout: Duration::from_secs(30),
        origin: Origin::Controller,
        stdin: None,
    };
    let out = ssh
        .run(ws, &request, None, &CancellationToken::new())
        .await
        .unwrap();
    assert!(out.success(), "{command}: {}", out.summary());
    out.stdout.trim().to_string()
}

fn png_size(png_bytes: &[u8]) -> (u32, u32) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

#[tokio::test]
async fn the_worker_is_sent_once_serves_screenshots_and_input_and_is_restarted() {
    let sshd = sshd_with_a_private_cache();
    let display = xvfb::Display::start(0);
    let scratch = tempfile::tempdir().unwrap();
    let ws = Workspace::elsewhere(scratch.path());
    let first = sshd
        .computer(&scratch.path().join("work"))
        .with_desktop(display.name.clone(), worker_binary());
    assert!(first.has_display());
    assert_eq!(first.display(), Some(display.name.as_str()));

    // The first use sends the binary, then takes the screenshot there.
    let shot = first.screenshot(None).await.unwrap();
    assert_eq!(
        shot.screen,
        Size {
            width: xvfb::WIDTH,
            height: xvfb::HEIGHT
        }
    );
    assert_eq!(
        shot.size,
        Size {
            width: 1024,
            height: 640
        }
    );
    assert_eq!(png_size(&shot.png), (1024, 640));
    assert_eq!(first.worker_uploads(), 1);
    let installed = remote(
        &first,
        &ws,
        "stat -c '%n %i %Y %a' \"$HOME\"/.cache/proto/proto-*",
    )
    .await;
    assert_eq!(installed.lines().count(), 1, "{installed}");
    assert!(installed.ends_with(" 755"), "{installed}");

    // A second computer (its own connection) finds the binary there and does not send it.
    let second = sshd
        .computer(&scratch.path().join("work"))
        .with_desktop(display.name.clone(), worker_binary());
    let zoomed = second
        .screenshot(Some(proto::computer::desktop::Region {
            x0: 80,
            y0: 80,
            x1: 280,
            y1: 180,
        }))
        .await
        .unwrap();
    assert_eq!(png_size(&zoomed.png), (250, 125));
    second
        .input(Input::Move(Point { x: 512, y: 320 }))
        .await
        .unwrap();
    assert_eq!(second.worker_uploads(), 0);
    let again = remote(
        &second,
        &ws,
        "stat -c '%n %i %Y %a' \"$HOME\"/.cache/proto/proto-*",
    )
    .await;
    assert_eq!(again, installed, "the binary was written again");

    // Workers that died are started again on the next request, from the copy there.
    remote(
        &first,
        &ws,
        &format!(
            "pkill -KILL -f -- '[w]orker --stdio --display {}'; sleep 0.3",
            display.name
        ),
    )
    .await;
    let after = first.screenshot(None).await.unwrap();
    assert_eq!(png_size(&after.png), (1024, 640));
    assert_eq!(first.worker_uploads(), 1);

    // Errors of the remote desktop come back as the desktop's own.
    let empty = first
        .screenshot(Some(proto::computer::desktop::Region {
            x0: 10,
            y0: 10,
            x1: 10,
            y1: 20,
        }))
        .await
        .unwrap_err();
    assert!(empty.to_string().contains("empty region"), "{empty}");
    assert!(!empty.is_transport(), "{empty:?}");
}

/// A recorded Anthropic stream that ends the turn with `text`.
fn end_turn(text: &str) -> mock_llm::Reply {
    mock_llm::Reply::sse(mock_llm::text_stream("m-end", text, "end_turn"))
}

#[test]
fn a_replayed_session_on_an_ssh_computer_types_into_the_remote_xterm() {
    let sshd = sshd_with_a_private_cache();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let mut display = xvfb::Display::start(1);
    display.xterm(home);
    let typed = home.join("typed.txt");
    let (x, y) = (xvfb::XTERM_MIDDLE.0 * 4 / 5, xvfb::XTERM_MIDDLE.1 * 4 / 5);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(mock_llm::MockLlm::start(vec![
        mock_llm::tool_use(
            "1",
            "Computer",
            json!({"action": "left_click", "coordinate": [x, y]}),
        ),
        mock_llm::tool_use(
            "2",
            "Computer",
            json!({"action": "type", "text": format!("echo hi > {}", typed.display())}),
        ),
        mock_llm::tool_use("3", "Computer", json!({"action": "key", "text": "Return"})),
        end_turn("Typed it."),
    ]));

    // The check gives the shell in the xterm three seconds to run what was typed.
    let goal = format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: typed}}\nspec:\n  product: app\n  owner: ceo\n  description: The xterm wrote typed.txt.\n  check: {{command: {{run: 'for i in $(seq 30); do grep -qx hi {} && exit 0; sleep 0.1; done; exit 1'}}}}\n",
        typed.display()
    );
    let company = company::small_company(home, &goal);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
    let computer = format!(
        "spec:\n  ssh: {{host: 127.0.0.1, port: {port}, user: {user}, identityFile: '{key}', knownHosts: '{known}'}}\n  workdir: '{work}'\n  capacity: 1\n  capabilities: [shell, gui]\n  display: '{display}'\n",
        port = sshd.port,
        user = whoami(),
        key = sshd.path("clientkey").display(),
        known = sshd.known_hosts().display(),
        work = home.join("remote-work").display(),
        display = display.name,
    );
    let yaml = yaml
        .replace(
            "  mission: Test.\n",
            &format!(
                "  mission: Test.\n  models:\n    providers: [{{name: mock, type: anthropic, baseUrl: '{}', apiKeyEnv: PROTO_TEST_KEY}}]\n",
                mock.base_url()
            ),
        )
        .replace(
            "tools: [Read, Write, Edit, Bash, Git]",
            "tools: [Read, Computer]",
        )
        .replace("spec: {local: {}, capacity: 2}\n", &computer);
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "A desktop over SSH"]);

    let state = home.join("state");
    let out = run_command(home, &company, &state).output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");

    // The command ran in the xterm: its effect is on disk.
    wait_for("the typed command's file", Duration::from_secs(10), || {
        typed.exists()
    });
    assert_eq!(std::fs::read_to_string(&typed).unwrap(), "hi\n");
    let goals = get_json(home, &state, "goals");
    assert_eq!(goals[0]["reason"], "CheckPassed", "{goals:#} {all}");
    assert!(all.contains("copied the desktop worker"), "{all}");

    // Each action's screenshot came back from the remote worker to the model.
    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "{all}");
    for request in &requests[1..] {
        let messages = request.body["messages"].as_array().unwrap();
        let blocks = messages.last().unwrap()["content"][0]["content"]
            .as_array()
            .unwrap();
        assert_eq!(blocks[0]["type"], "image", "{blocks:#?}");
    }
    // The work ran on the SSH computer: its workspace is in the remote's workdir.
    assert!(home.join("remote-work").is_dir());
    assert!(!state.join("work").join("typed").exists());
}
