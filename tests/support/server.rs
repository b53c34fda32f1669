//! What the HTTP API's tests and its load benchmark share: the real `proto run --listen`
//! on a loopback port with a known token and webhook secret, GitHub's example payloads from
//! npm signed as GitHub signs them, and the reading of a Server-Sent Events stream.

#![allow(dead_code)] // each binary that includes this module uses its own subset

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::cli;

pub const TOKEN: &str = "test-token-0123456789";
pub const SECRET: &str = "It's a Secret to Everybody";
/// How long the controller may take to listen.
const LISTEN: Duration = Duration::from_secs(60);

/// A `proto run --listen 127.0.0.1:0` (the system picks a free port; the controller prints
/// it), stopped (SIGTERM) when dropped.
pub struct Controller {
    pub child: Child,
    pub base: String,
    err: PathBuf,
}

impl Controller {
    pub fn start(home: &Path, source: Option<&str>, state: &Path, extra: &[&str]) -> Controller {
        let token_file = home.join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let err = home.join("controller.err");
        let mut command = std::process::Command::new(cli::bin());
        command.arg("run");
        if let Some(source) = source {
            command.arg(source);
        }
        command
            .args(["--state-dir", state.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
            .args(["--token-file", token_file.to_str().unwrap()])
            .args(extra)
            .env("HOME", home)
            .env("RUST_LOG", "info")
            .env("PROTO_WEBHOOK_SECRET", SECRET)
            .env_remove("ANTHROPIC_API_KEY")
            .stdin(Stdio::null())
            .stdout(File::create(home.join("controller.out")).unwrap())
            .stderr(File::create(&err).unwrap());
        let child = command.spawn().unwrap();
        let mut base = String::new();
        cli::wait_for("the server to listen", LISTEN, || {
            let text = std::fs::read_to_string(&err).unwrap_or_default();
            match text.split("dashboard on ").nth(1) {
                Some(rest) => {
                    base = rest
                        .lines()
                        .next()
                        .unwrap()
                        .trim_end_matches('/')
                        .to_string();
                    true
                }
                None => false,
            }
        });
        Controller { child, base, err }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Where the npm packages of the tests are (`scripts/test.sh` installs them).
pub fn npm_prefix() -> PathBuf {
    std::env::var_os("PROTO_TEST_NPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/npm"))
}

/// GitHub's example payloads of one event, as published on npm.
pub fn examples(event: &str) -> Vec<Value> {
    let index =
        npm_prefix().join("node_modules/@octokit/webhooks-examples/api.github.com/index.json");
    let text = std::fs::read_to_string(&index).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/test.sh (it installs @octokit/webhooks-examples from npm)",
            index.display()
        )
    });
    let all: Vec<Value> = serde_json::from_str(&text).unwrap();
    all.into_iter().find(|e| e["name"] == event).unwrap()["examples"]
        .as_array()
        .unwrap()
        .clone()
}

/// The HMAC-SHA256 of `body` under [`SECRET`], in hex (GitHub's `X-Hub-Signature-256`
/// after `sha256=`, Gitea's `X-Gitea-Signature`).
pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// One Server-Sent Event: its id (the store's event id), its event name and its data.
pub type Block = (i64, String, String);

/// Takes every complete event off the front of `buffer` (text read so far from a stream);
/// what is left is the start of the next one. Comments (keep-alives) are skipped.
pub fn take_events(buffer: &mut String) -> Vec<Block> {
    let mut out = Vec::new();
    while let Some(cut) = buffer.find("\n\n") {
        let block: String = buffer.drain(..cut + 2).collect();
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        if let (Some(id), Some(event), Some(data)) = (field("id:"), field("event:"), field("data:"))
        {
            out.push((id.parse().unwrap(), event, data));
        }
    }
    out
}
