//! `proto worker --stdio`: what must run on a remote computer itself, spoken in JSON lines
//! over the standard input and output of a process the controller started there with
//! [`Computer::attach`](super::Computer::attach). Today that is the desktop (screenshots and
//! input need a connection to the remote's X display); both ends use the types here.
//!
//! One request per line, each with an `id` the answer repeats, and one answer per line with
//! either `ok` or `error`:
//!
//! ```text
//! → {"id":1,"op":"hello"}
//! ← {"id":1,"ok":{"op":"hello","version":"0.1.0","sha256":"9f2c…"}}
//! → {"id":2,"op":"screenshot","region":{"x0":0,"y0":0,"x1":200,"y1":100}}
//! ← {"id":2,"ok":{"op":"screenshot","png":"iVBORw0…","width":250,"height":125,"screen_width":1280,"screen_height":800}}
//! → {"id":3,"op":"input","input":{"type":"echo hi"}}
//! ← {"id":3,"ok":{"op":"input"}}
//! → {"id":4,"op":"paint"}
//! ← {"id":4,"error":{"kind":"request","message":"unknown variant `paint`, …"}}
//! ```
//!
//! A line that is not a request gets an `error` answer (with its `id` when one can be read,
//! else `null`), never a crash; blank lines are skipped. The worker serves one request at a
//! time and ends at the end of its input, which is also what a dropped SSH connection looks
//! like to it. `hello` names the worker's version and the SHA-256 of its own binary, so the
//! controller knows the copy it runs is the one it sent.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::desktop::{Desktop, DesktopError, Input, Region, Screenshot, Size};

/// The longest request line read; a longer one is answered with an error and skipped.
pub const MAX_REQUEST: usize = 1024 * 1024;

/// One request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u64,
    #[serde(flatten)]
    pub op: Op,
}

/// What a request asks for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The worker's version and the SHA-256 of its binary.
    Hello,
    /// [`Desktop::screenshot`] of the worker's display.
    Screenshot {
        #[serde(default)]
        region: Option<Region>,
    },
    /// [`Desktop::input`] on the worker's display.
    Input { input: Input },
}

/// One answer: the request's `id` (`None` when the line had none that could be read) and
/// its outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub id: Option<u64>,
    #[serde(flatten)]
    pub reply: Reply,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(Answer),
    Error(Failure),
}

/// What a request that went through gives back, tagged with its `op`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Answer {
    Hello {
        version: String,
        sha256: String,
    },
    /// A [`Screenshot`], its PNG in base64.
    Screenshot {
        png: String,
        width: u32,
        height: u32,
        screen_width: u32,
        screen_height: u32,
    },
    Input {},
}

impl Answer {
    fn screenshot(shot: &Screenshot) -> Answer {
        Answer::Screenshot {
            png: base64::engine::general_purpose::STANDARD.encode(&shot.png),
            width: shot.size.width,
            height: shot.size.height,
            screen_width: shot.screen.width,
            screen_height: shot.screen.height,
        }
    }

    /// The screenshot of a [`Answer::Screenshot`], exactly as the worker's desktop took it.
    pub fn into_screenshot(self) -> Result<Screenshot, String> {
        match self {
            Answer::Screenshot {
                png,
                width,
                height,
                screen_width,
                screen_height,
            } => Ok(Screenshot {
                png: base64::engine::general_purpose::STANDARD
                    .decode(png)
                    .map_err(|e| format!("a screenshot that is not base64: {e}"))?,
                size: Size { width, height },
                screen: Size {
                    width: screen_width,
                    height: screen_height,
                },
            }),
            other => Err(format!("a screenshot was answered with {other:?}")),
        }
    }
}

/// Why a request failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
}

/// The kinds of [`Failure`]: the request's own, or the [`DesktopError`] it met.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The line is not a request this worker knows.
    Request,
    /// The worker could not do what any request needs (read its own binary, say).
    Worker,
    /// The worker was started without a display.
    NoDisplay,
    Connect,
    Capture,
    Input,
    Unsupported,
    Gone,
    NotBuilt,
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// A desktop's error as the worker sends it (the display is the controller's to name).
    fn of(error: DesktopError) -> Failure {
        match error {
            DesktopError::Connect { reason, .. } => Failure::new(FailureKind::Connect, reason),
            DesktopError::Capture { reason, .. } => Failure::new(FailureKind::Capture, reason),
            DesktopError::Input { reason, .. } => Failure::new(FailureKind::Input, reason),
            DesktopError::Unsupported { reason, .. } => {
                Failure::new(FailureKind::Unsupported, reason)
            }
            DesktopError::Worker { reason, .. } => Failure::new(FailureKind::Worker, reason),
            e @ DesktopError::Gone(_) => Failure::new(FailureKind::Gone, e.to_string()),
            e @ DesktopError::NotBuilt(_) => Failure::new(FailureKind::NotBuilt, e.to_string()),
        }
    }

    /// The failure as the error of the desktop `display` on the controller's side.
    pub fn into_desktop_error(self, display: &str) -> DesktopError {
        let display = display.to_string();
        let reason = self.message;
        match self.kind {
            FailureKind::Connect => DesktopError::Connect { display, reason },
            FailureKind::Capture => DesktopError::Capture { display, reason },
            FailureKind::Input => DesktopError::Input { display, reason },
            FailureKind::Unsupported => DesktopError::Unsupported { display, reason },
            FailureKind::Gone => DesktopError::Gone(display),
            FailureKind::NotBuilt => DesktopError::NotBuilt(display),
            FailureKind::Request | FailureKind::Worker | FailureKind::NoDisplay => {
                DesktopError::Worker { display, reason }
            }
        }
    }
}

/// The SHA-256 of a file, in hex, read in pieces (a binary can be large).
pub fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What serving needs between requests: the display, its desktop (made on first use) and
/// the hash of this binary (computed on the first `hello`).
struct Worker {
    display: Option<String>,
    desktop: Option<Desktop>,
    sha256: Option<String>,
}

/// Serves requests from `input`, answering on `output`, until `input` ends. `display` is the
/// X display screenshots and input go to. Only the streams themselves failing is an `Err`.
pub async fn serve(
    input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
    display: Option<String>,
) -> std::io::Result<()> {
    let mut input = BufReader::new(input);
    let mut worker = Worker {
        display,
        desktop: None,
        sha256: None,
    };
    while let Some(line) = read_line(&mut input, MAX_REQUEST).await? {
        let response = match line {
            Line::Blank => continue,
            Line::TooLong => Response {
                id: None,
                reply: Reply::Error(Failure::new(
                    FailureKind::Request,
                    format!("a request longer than {MAX_REQUEST} bytes"),
                )),
            },
            Line::Text(bytes) => worker.answer(&bytes).await,
        };
        let mut text = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
        text.push(b'\n');
        output.write_all(&text).await?;
        output.flush().await?;
    }
    Ok(())
}

impl Worker {
    async fn answer(&mut self, line: &[u8]) -> Response {
        let request = match serde_json::from_slice::<Request>(line) {
            Ok(request) => request,
            Err(e) => {
                // The id, if the line has one, so the answer still reaches its asker.
                let id = serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("id")?.as_u64());
                return Response {
                    id,
                    reply: Reply::Error(Failure::new(FailureKind::Request, e.to_string())),
                };
            }
        };
        let reply = match self.act(request.op).await {
            Ok(answer) => Reply::Ok(answer),
            Err(failure) => Reply::Error(failure),
        };
        Response {
            id: Some(request.id),
            reply,
        }
    }

    async fn act(&mut self, op: Op) -> Result<Answer, Failure> {
        match op {
            Op::Hello => Ok(Answer::Hello {
                version: env!("CARGO_PKG_VERSION").to_string(),
                sha256: self.sha256().await?,
            }),
            Op::Screenshot { region } => {
                let shot = self.desktop()?.screenshot(region).await;
                Ok(Answer::screenshot(&shot.map_err(Failure::of)?))
            }
            Op::Input { input } => {
                self.desktop()?.input(input).await.map_err(Failure::of)?;
                Ok(Answer::Input {})
            }
        }
    }

    async fn sha256(&mut self) -> Result<String, Failure> {
        if let Some(sha256) = &self.sha256 {
            return Ok(sha256.clone());
        }
        let failed = |e: String| Failure::new(FailureKind::Worker, format!("its binary: {e}"));
        let exe = std::env::current_exe().map_err(|e| failed(e.to_string()))?;
        let sha256 = tokio::task::spawn_blocking(move || file_sha256(&exe))
            .await
            .map_err(|e| failed(e.to_string()))?
            .map_err(|e| failed(e.to_string()))?;
        self.sha256 = Some(sha256.clone());
        Ok(sha256)
    }

    fn desktop(&mut self) -> Result<&Desktop, Failure> {
        let Some(display) = self.display.as_deref() else {
            return Err(Failure::new(
                FailureKind::NoDisplay,
                "the worker has no display (pass --display or set DISPLAY)",
            ));
        };
        if self.desktop.is_none() {
            self.desktop = Some(Desktop::new(display).map_err(Failure::of)?);
        }
        self.desktop
            .as_ref()
            .ok_or_else(|| Failure::new(FailureKind::Worker, "no desktop"))
    }
}

/// One line of input.
enum Line {
    Text(Vec<u8>),
    Blank,
    /// Longer than the limit (what came of it was skipped up to its end).
    TooLong,
}

/// The next line (without its newline), reading no more than `max` bytes of it into memory;
/// `None` at the end of the input.
async fn read_line(
    input: &mut BufReader<impl AsyncRead + Unpin>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            if line.is_empty() && !too_long {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match available.iter().position(|b| *b == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            line.extend_from_slice(&available[..take]);
            if line.len() > max {
                too_long = true;
                line = Vec::new();
            }
        }
        input.consume(take);
        if done {
            break;
        }
    }
    if too_long {
        return Ok(Some(Line::TooLong));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Line::Blank));
    }
    Ok(Some(Line::Text(line)))
}

/// `proto worker --stdio`: serves this process's standard input and output (see the module
/// docs) on a runtime of its own, until the input ends.
pub fn serve_stdio(display: Option<String>) -> std::io::Result<()> {
    use std::os::fd::AsFd as _;
    // Duplicates of the standard streams as files: reads and writes go through tokio's
    // blocking pool, which is all a pipe from sshd needs.
    let stdin = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let stdout = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(
        tokio::fs::File::from_std(stdin),
        tokio::fs::File::from_std(stdout),
        display,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::computer::desktop::{Button, Point};

    /// Serves `input` (no display) and returns the answers.
    async fn answers(input: &str) -> Vec<serde_json::Value> {
        let mut output = Vec::new();
        serve(input.as_bytes(), &mut output, None).await.unwrap();
        String::from_utf8(output)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn hello_names_the_version_and_the_binarys_hash() {
        let out = answers("{\"id\":7,\"op\":\"hello\"}\n").await;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["id"], 7);
        assert_eq!(out[0]["ok"]["op"], "hello");
        assert_eq!(out[0]["ok"]["version"], env!("CARGO_PKG_VERSION"));
        let exe = std::env::current_exe().unwrap();
        assert_eq!(out[0]["ok"]["sha256"], file_sha256(&exe).unwrap());
    }

    #[tokio::test]
    async fn bad_lines_get_error_answers_and_serving_goes_on() {
        let long = format!(
            "{{\"id\":1,\"op\":\"hello\",\"pad\":\"{}\"}}",
            "x".repeat(MAX_REQUEST)
        );
        let input = format!(
            "not json\n\n{{\"id\":2,\"op\":\"paint\"}}\n{{\"op\":\"hello\"}}\n\u{7f}\u{0}\n{long}\n{{\"id\":3,\"op\":\"screenshot\"}}\n{{\"id\":4,\"op\":\"hello\"}}"
        );
        let out = answers(&input).await;
        assert_eq!(out.len(), 7, "{out:#?}");
        assert_eq!(out[0]["id"], serde_json::Value::Null);
        assert_eq!(out[0]["error"]["kind"], "request");
        assert_eq!(out[1]["id"], 2);
        assert!(
            out[1]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("paint"),
            "{:#}",
            out[1]
        );
        assert_eq!(out[2]["error"]["kind"], "request");
        assert_eq!(out[3]["error"]["kind"], "request");
        assert_eq!(out[4]["error"]["kind"], "request");
        assert!(
            out[4]["error"]["message"]
                .as_str()
                .unwrap()
                .contains("longer")
        );
        // No display: the desktop's requests say so; the last line, without a newline, is
        // still served.
        assert_eq!(out[5]["id"], 3);
        assert_eq!(out[5]["error"]["kind"], "no_display");
        assert_eq!(out[6]["id"], 4);
        assert_eq!(out[6]["ok"]["op"], "hello");
    }

    #[test]
    fn requests_and_answers_read_back_as_they_were_written() {
        let requests = [
            Request {
                id: 1,
                op: Op::Screenshot {
                    region: Some(Region {
                        x0: 1,
                        y0: 2,
                        x1: 30,
                        y1: 40,
                    }),
                },
            },
            Request {
                id: 2,
                op: Op::Input {
                    input: Input::Click {
                        at: Some(Point { x: 5, y: 6 }),
                        button: Button::Right,
                        count: 2,
                    },
                },
            },
            Request {
                id: 3,
                op: Op::Input {
                    input: Input::Type("echo hi\n".into()),
                },
            },
        ];
        for request in requests {
            let text = serde_json::to_string(&request).unwrap();
            assert!(!text.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), request);
        }
        let shot = Screenshot {
            png: vec![137, 80, 78, 71],
            size: Size {
                width: 1024,
                height: 640,
            },
            screen: Size {
                width: 1280,
                height: 800,
            },
        };
        let response = Response {
            id: Some(9),
            reply: Reply::Ok(Answer::screenshot(&shot)),
        };
        let text = serde_json::to_string(&response).unwrap();
        let back: Response = serde_json::from_str(&text).unwrap();
        let Reply::Ok(answer) = back.reply else {
            panic!("{text}")
        };
        assert_eq!(answer.into_screenshot().unwrap(), shot);
    }

    #[test]
    fn failures_become_the_desktops_errors_again() {
        let failure = Failure::of(DesktopError::Capture {
            display: ":5".into(),
            reason: "no screen".into(),
        });
        assert_eq!(failure.kind, FailureKind::Capture);
        assert!(matches!(
            failure.into_desktop_error(":9"),
            DesktopError::Capture { display, reason } if display == ":9" && reason == "no screen"
        ));
    }
}
