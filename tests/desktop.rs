//! Desktops under agent control, against a real Xvfb with a real xterm started by each test:
//! a screenshot through the `Computer` tool decodes to the model's size with the screen's
//! aspect and shows the xterm where it is; a replayed model session (a local server speaking
//! the Anthropic wire format) clicks into the xterm and types a command whose effect is
//! checked on disk, the server is sent each screenshot as an image block of the tool
//! result, and the audit keeps the screenshot's hash and size, never its pixels.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

#[path = "support/cli.rs"]
mod cli;
#[path = "support/company.rs"]
mod company;
#[path = "support/mock_llm.rs"]
mod mock_llm;
#[path = "support/xvfb.rs"]
mod xvfb;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use proto::computer::desktop::Desktop;
use proto::computer::{Local, Workspace};
use proto::gitops::Identity;
use proto::tools::{ComputerUse, Tool, ToolContext, ToolOutput};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use cli::{get_json, git, run_command, text, wait_for};

/// Decodes a PNG: its size and RGB(A) pixels.
fn decode(png_bytes: &[u8]) -> (u32, u32, Vec<u8>, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels, channels)
}

/// The RGB of pixel (x, y).
fn pixel(pixels: &[u8], width: u32, channels: usize, (x, y): (u32, u32)) -> [u8; 3] {
    let at = (y * width + x) as usize * channels;
    [pixels[at], pixels[at + 1], pixels[at + 2]]
}

/// Runs the `Computer` tool on a local computer driving `display`.
async fn computer_use(display: &str, input: Value) -> ToolOutput {
    let dir = tempfile::tempdir().unwrap();
    let local = Local::new("desk", dir.path().join("work"))
        .with_desktop(Arc::new(Desktop::new(display).unwrap()));
    let workspace = Workspace::new(dir.path());
    let author = Identity {
        name: "Ada".into(),
        email: "ada@example.com".into(),
    };
    let cancel = CancellationToken::new();
    let ctx = ToolContext {
        computer: &local,
        workspace: &workspace,
        cancel: &cancel,
        agent: "ada",
        author: &author,
        planning_file: None,
        step: None,
    };
    ComputerUse.run(&input, &ctx).await.unwrap()
}

#[tokio::test]
async fn a_screenshot_decodes_to_the_models_size_and_shows_the_screen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut display = xvfb::Display::start(0);
    display.xterm(tmp.path());

    let out = computer_use(&display.name, json!({"action": "screenshot"})).await;
    assert!(!out.is_error, "{}", out.content);
    assert!(out.content.contains("1024x640"), "{}", out.content);
    assert_eq!(out.images.len(), 1);
    let image = &out.images[0];
    assert_eq!(image.media_type.as_str(), "image/png");
    let png_bytes = base64::engine::general_purpose::STANDARD
        .decode(&image.data)
        .unwrap();
    assert_eq!(image.bytes, png_bytes.len());
    let (width, height, pixels, channels) = decode(&png_bytes);
    // Scaled to the model's limit, with the screen's aspect (1280x800 is 16:10).
    assert_eq!((width, height), (1024, 640));
    assert_eq!(
        u64::from(width) * u64::from(xvfb::HEIGHT),
        u64::from(height) * u64::from(xvfb::WIDTH)
    );
    // What the screen shows, where it shows it: the bare root window (black) in a corner,
    // the xterm's white page at its middle (in picture pixels, 0.8 of the screen's).
    let scaled = |(x, y): (u32, u32)| (x * 4 / 5, y * 4 / 5);
    assert_eq!(pixel(&pixels, width, channels, (5, 5)), [0, 0, 0]);
    assert_eq!(
        pixel(&pixels, width, channels, scaled(xvfb::XTERM_MIDDLE)),
        [255, 255, 255]
    );

    // `zoom` sees a region at the screen's own resolution: 200x100 picture pixels are
    // 250x125 screen pixels.
    let zoomed = computer_use(
        &display.name,
        json!({"action": "zoom", "region": [80, 80, 280, 180]}),
    )
    .await;
    let png_bytes = base64::engine::general_purpose::STANDARD
        .decode(&zoomed.images[0].data)
        .unwrap();
    let (width, height, ..) = decode(&png_bytes);
    assert_eq!((width, height), (250, 125));
}

/// A recorded Anthropic stream that ends the turn with `text`.
fn end_turn(text: &str) -> mock_llm::Reply {
    mock_llm::Reply::sse(mock_llm::text_stream("m-end", text, "end_turn"))
}

/// Every audit record the controller committed, as text.
fn audit_text(company: &Path) -> String {
    std::fs::read_dir(company.join(".proto/audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect()
}

#[test]
fn a_replayed_session_types_a_command_into_the_xterm_and_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path();
    let mut display = xvfb::Display::start(1);
    display.xterm(home);
    let typed = home.join("typed.txt");
    // The xterm's middle, in the model's picture of the screen (1024x640 for 1280x800).
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

    // The check gives the shell in the xterm three seconds to run what was typed (a loaded
    // machine may be slow to), as a check of any effect on a screen has to. (It also runs,
    // and fails, once before the agent works: the goal might already hold.)
    let goal = format!(
        "apiVersion: proto.dev/v1alpha1\nkind: Goal\nmetadata: {{name: typed}}\nspec:\n  product: app\n  owner: ceo\n  description: The xterm wrote typed.txt.\n  check: {{command: {{run: 'for i in $(seq 30); do grep -qx hi {} && exit 0; sleep 0.1; done; exit 1'}}}}\n",
        typed.display()
    );
    let company = company::small_company(home, &goal);
    let yaml = std::fs::read_to_string(company.join("company.yaml")).unwrap();
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
        .replace(
            "spec: {local: {}, capacity: 2}",
            &format!(
                "spec: {{local: {{}}, capacity: 1, capabilities: [shell, gui], display: '{}'}}",
                display.name
            ),
        );
    std::fs::write(company.join("company.yaml"), yaml).unwrap();
    git(&company, &["add", "-A"]);
    git(&company, &["commit", "-q", "-m", "A desktop"]);

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

    // The model was offered the tool and sent each action's screenshot as an image block of
    // the tool result, in the Messages API's shape.
    let requests = mock.requests();
    assert_eq!(requests.len(), 4, "{all}");
    let tools = requests[0].body["tools"].as_array().unwrap();
    assert!(tools.iter().any(|t| t["name"] == "Computer"), "{tools:#?}");
    for (request, call) in requests[1..].iter().zip(["toolu_1", "toolu_2", "toolu_3"]) {
        let messages = request.body["messages"].as_array().unwrap();
        let result = &messages.last().unwrap()["content"][0];
        assert_eq!(result["type"], "tool_result");
        assert_eq!(result["tool_use_id"], call);
        let blocks = result["content"].as_array().unwrap();
        assert_eq!(blocks[0]["type"], "image", "{blocks:#?}");
        assert_eq!(blocks[0]["source"]["type"], "base64");
        assert_eq!(blocks[0]["source"]["media_type"], "image/png");
        let png_bytes = base64::engine::general_purpose::STANDARD
            .decode(blocks[0]["source"]["data"].as_str().unwrap())
            .unwrap();
        let (width, height, ..) = decode(&png_bytes);
        assert_eq!((width, height), (1024, 640));
        assert_eq!(blocks[1]["type"], "text");
    }

    // The activity log tells the actions apart, as permission rules do.
    let logs = text(&cli::proto(
        home,
        &[
            "logs",
            "--goal",
            "typed",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    ));
    for call in ["Computer(left_click)", "Computer(type)", "Computer(key)"] {
        assert!(logs.contains(call), "{call} not in the logs:\n{logs}");
    }

    // The audit names each screenshot by hash and size; its pixels are nowhere in it.
    let audit = audit_text(&company);
    let records: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &Value| r["action"] == "Computer")
        .collect();
    assert_eq!(records.len(), 3, "{audit}");
    for record in &records {
        let image = &record["outcome"]["images"][0];
        assert_eq!(image["sha256"].as_str().unwrap().len(), 64, "{record:#}");
        assert!(image["bytes"].as_u64().unwrap() > 1000, "{record:#}");
    }
    assert!(
        !audit.contains("iVBORw0KGgo"),
        "PNG data in the audit: {audit}"
    );
}
