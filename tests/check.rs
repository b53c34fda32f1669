//! Goal checks against real parts: commands run by the local computer, HTTP against a small
//! server answering on a local port, files in a real workspace.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proto::check::{CheckResult, run_check};
use proto::computer::{Local, Workspace};
use proto::spec::{Check, CommandCheck, FileCheck, HttpCheck, JudgeCheck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Far below the 30 s the slow parts take: finishing under it proves the check gave up.
const WELL_BEFORE: Duration = Duration::from_secs(20);

fn setup() -> (tempfile::TempDir, Local, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ws");
    std::fs::create_dir(&root).unwrap();
    let local = Local::new("local", dir.path().join("work"));
    (dir, local, Workspace::new(root))
}

async fn check(check: &Check) -> CheckResult {
    let (_dir, local, ws) = setup();
    run_check(check, &local, &ws, &CancellationToken::new()).await
}

fn command(run: &str, timeout: Option<&str>) -> Check {
    Check {
        command: Some(CommandCheck {
            run: run.into(),
            timeout: timeout.map(Into::into),
        }),
        ..Check::default()
    }
}

fn http(url: String, status: Option<u16>, body_matches: Option<&str>) -> Check {
    Check {
        http: Some(HttpCheck {
            url,
            status,
            body_matches: body_matches.map(Into::into),
            timeout: Some("10s".into()),
        }),
        ..Check::default()
    }
}

fn file(path: &str, matches: Option<&str>) -> Check {
    Check {
        file: Some(FileCheck {
            path: path.into(),
            matches: matches.map(Into::into),
        }),
        ..Check::default()
    }
}

fn failed(detail: &str) -> CheckResult {
    CheckResult::Failed {
        detail: detail.into(),
    }
}

fn passed(detail: &str) -> CheckResult {
    CheckResult::Passed {
        detail: detail.into(),
    }
}

#[tokio::test]
async fn commands_pass_on_exit_status_zero() {
    assert_eq!(check(&command("true", None)).await, passed("exit status 0"));
    assert_eq!(
        check(&command(
            "echo building; echo 'tests failed' >&2; exit 3",
            None
        ))
        .await,
        failed("exit status 3: tests failed")
    );
}

#[tokio::test]
async fn commands_run_in_the_workspace() {
    let (_dir, local, ws) = setup();
    std::fs::write(ws.root().join("marker"), "").unwrap();
    let result = run_check(
        &command("test -e marker", None),
        &local,
        &ws,
        &CancellationToken::new(),
    )
    .await;
    assert!(result.passed(), "{result:?}");
}

#[tokio::test]
async fn commands_time_out() {
    let started = Instant::now();
    let result = check(&command("sleep 30", Some("500ms"))).await;
    assert!(started.elapsed() < WELL_BEFORE);
    assert!(!result.passed());
    assert!(
        result.detail().starts_with("timed out after "),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_unreadable_timeout_fails_the_check() {
    let result = check(&command("true", Some("soon"))).await;
    assert!(!result.passed());
    assert!(
        result.detail().contains("invalid duration \"soon\""),
        "{result:?}"
    );
}

#[tokio::test]
async fn cancellation_fails_the_check() {
    let (_dir, local, ws) = setup();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let result = run_check(&command("true", None), &local, &ws, &cancel).await;
    assert_eq!(result, failed("cancelled"));

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let slow = command("touch started; sleep 30", None);
    let running = run_check(&slow, &local, &ws, &cancel);
    let canceller = async {
        while !ws.root().join("started").exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(running, canceller);
    assert!(started.elapsed() < WELL_BEFORE);
    assert_eq!(result, failed("cancelled"));
}

/// A small HTTP/1.1 server on 127.0.0.1: `/ok` answers 200 with a versioned body, `/moved`
/// redirects to `/ok`, `/slow` never answers, anything else is 404.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request);
                let path = request.split(' ').nth(1).unwrap_or("/");
                let (status, extra, body) = match path {
                    "/ok" => ("200 OK", "", "<h1>Shop</h1> version 1.4.2"),
                    "/moved" => ("302 Found", "Location: /ok\r\n", ""),
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => ("404 Not Found", "", "not here"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\n{extra}Content-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn http_passes_on_the_expected_status() {
    let addr = server().await;
    assert_eq!(
        check(&http(format!("http://{addr}/ok"), None, None)).await,
        passed("status 200")
    );
    assert_eq!(
        check(&http(format!("http://{addr}/gone"), Some(404), None)).await,
        passed("status 404")
    );
}

#[tokio::test]
async fn http_fails_on_another_status() {
    let addr = server().await;
    let url = format!("http://{addr}/gone");
    assert_eq!(
        check(&http(url.clone(), None, None)).await,
        failed(&format!("GET {url}: status 404, expected 200"))
    );
}

#[tokio::test]
async fn http_matches_the_body() {
    let addr = server().await;
    let url = format!("http://{addr}/ok");
    assert_eq!(
        check(&http(url.clone(), None, Some(r"version \d+\.\d+"))).await,
        passed(r"status 200, body matches /version \d+\.\d+/")
    );
    assert_eq!(
        check(&http(url.clone(), None, Some("version 2"))).await,
        failed(&format!("GET {url}: body does not match /version 2/"))
    );
    let invalid = check(&http(url, None, Some("version ("))).await;
    assert!(!invalid.passed());
    assert!(
        invalid
            .detail()
            .starts_with("invalid regular expression /version (/: "),
        "{invalid:?}"
    );
    assert!(!invalid.detail().contains('\n'));
}

#[tokio::test]
async fn http_redirects_are_followed_unless_expected() {
    let addr = server().await;
    let url = format!("http://{addr}/moved");
    assert_eq!(
        check(&http(url.clone(), None, None)).await,
        passed("status 200")
    );
    assert_eq!(
        check(&http(url, Some(302), None)).await,
        passed("status 302")
    );
}

#[tokio::test]
async fn http_connection_refused_fails_with_the_reason() {
    // A port that was just free: nothing listens on it once the listener is gone.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/");
    let result = check(&http(url.clone(), None, None)).await;
    assert!(!result.passed());
    let detail = result.detail();
    assert!(
        detail.starts_with(&format!("GET {url}: cannot connect: ")),
        "{detail}"
    );
    assert!(detail.to_lowercase().contains("refused"), "{detail}");
}

#[tokio::test]
async fn http_times_out() {
    let addr = server().await;
    let mut slow = http(format!("http://{addr}/slow"), None, None);
    if let Some(http) = &mut slow.http {
        http.timeout = Some("500ms".into());
    }
    let started = Instant::now();
    let result = check(&slow).await;
    assert!(started.elapsed() < WELL_BEFORE);
    assert_eq!(
        result,
        failed(&format!("GET http://{addr}/slow: timed out"))
    );
}

#[tokio::test]
async fn http_is_cancelled() {
    let addr = server().await;
    let (_dir, local, ws) = setup();
    let cancel = CancellationToken::new();
    let slow = http(format!("http://{addr}/slow"), None, None);
    let started = Instant::now();
    let (result, ()) = tokio::join!(run_check(&slow, &local, &ws, &cancel), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    assert!(started.elapsed() < WELL_BEFORE);
    assert_eq!(result, failed("cancelled"));
}

#[tokio::test]
async fn files_exist_and_match() {
    let (_dir, local, ws) = setup();
    std::fs::create_dir(ws.root().join("docs")).unwrap();
    std::fs::write(
        ws.root().join("docs/CHANGELOG.md"),
        "## 1.4.2\n- faster checkout\n",
    )
    .unwrap();
    let cancel = CancellationToken::new();
    let run = async |c: Check| run_check(&c, &local, &ws, &cancel).await;

    assert_eq!(
        run(file("docs/CHANGELOG.md", None)).await,
        passed("docs/CHANGELOG.md exists")
    );
    assert_eq!(
        run(file("docs/CHANGELOG.md", Some(r"(?m)^## 1\.4\.\d+$"))).await,
        passed(r"docs/CHANGELOG.md matches /(?m)^## 1\.4\.\d+$/")
    );
    assert_eq!(
        run(file("docs/CHANGELOG.md", Some("2.0"))).await,
        failed("docs/CHANGELOG.md does not match /2.0/")
    );
    assert_eq!(
        run(file("docs/missing.md", None)).await,
        failed("docs/missing.md: missing")
    );
    assert_eq!(
        run(file("../outside", None)).await,
        failed("../outside: outside the workspace")
    );
}

#[tokio::test]
async fn file_content_need_not_be_utf8() {
    let (_dir, local, ws) = setup();
    std::fs::write(ws.root().join("blob"), b"\xff\xfeready\x00").unwrap();
    let result = run_check(
        &file("blob", Some("ready")),
        &local,
        &ws,
        &CancellationToken::new(),
    )
    .await;
    assert!(result.passed(), "{result:?}");
}

#[tokio::test]
async fn judges_need_a_model() {
    let judge = Check {
        judge: Some(JudgeCheck {
            rubric: "The landing page explains the product".into(),
            model: None,
        }),
        ..Check::default()
    };
    assert_eq!(check(&judge).await, CheckResult::NeedsModel);
}

#[tokio::test]
async fn a_check_of_no_kind_fails() {
    assert!(!check(&Check::default()).await.passed());
}
