//! Screenshots per second through the `Computer` tool's path on a 1280x800 Xvfb showing an
//! xterm: capture over X, scale to 1024x640, PNG encode, base64 and hash for the image
//! block. Prints the rate, the mean time and PNG size of one screenshot; the goal is at
//! least 20 per second.
//!
//! Run with `cargo bench --bench desktop` (`PROTO_DESKTOP_SHOTS`, default 200).
//! `cargo test --all-targets` runs it without `--bench` for a few screenshots, so it stays
//! working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly by design

#[path = "../tests/support/xvfb.rs"]
mod xvfb;

use std::sync::Arc;
use std::time::Instant;

use proto::computer::desktop::Desktop;
use proto::computer::{Local, Workspace};
use proto::gitops::Identity;
use proto::tools::{ComputerUse, Tool, ToolContext};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The rate the tool must reach.
const GOAL_PER_SECOND: f64 = 20.0;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let shots: usize = if bench {
        std::env::var("PROTO_DESKTOP_SHOTS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(200)
    } else {
        3
    };
    let dir = tempfile::tempdir().unwrap();
    let mut display = xvfb::Display::start(15);
    display.xterm(dir.path());
    let local = Local::new("desk", dir.path().join("work"))
        .with_desktop(Arc::new(Desktop::new(&display.name).unwrap()));
    let workspace = Workspace::new(dir.path());
    let author = Identity {
        name: "bench".into(),
        email: "bench@example.com".into(),
    };
    let cancel = CancellationToken::new();
    let ctx = ToolContext {
        computer: &local,
        workspace: &workspace,
        cancel: &cancel,
        agent: "bench",
        author: &author,
        planning_file: None,
        step: None,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let input = json!({"action": "screenshot"});
    rt.block_on(async {
        // The first call connects to the display; it is not what is measured.
        let first = ComputerUse.run(&input, &ctx).await.unwrap();
        assert_eq!(first.images.len(), 1, "{}", first.content);
        let started = Instant::now();
        let mut bytes = 0;
        for _ in 0..shots {
            let out = ComputerUse.run(&input, &ctx).await.unwrap();
            bytes += out.images[0].bytes;
        }
        let elapsed = started.elapsed();
        let rate = shots as f64 / elapsed.as_secs_f64();
        println!(
            "desktop: {shots} screenshots of a 1280x800 screen sent at 1024x640 through the Computer tool: \
             {rate:.1}/s ({:.1} ms each, {} KiB PNG on average; goal >= {GOAL_PER_SECOND}/s)",
            elapsed.as_secs_f64() * 1000.0 / shots as f64,
            bytes / shots / 1024
        );
        if bench && rate < GOAL_PER_SECOND {
            eprintln!("desktop: below the goal of {GOAL_PER_SECOND} screenshots per second");
        }
    });
}
