use super::*;

/// Real-format fake credentials, built at run time so this file holds none whole.
fn aws_key_id() -> String {
    ["AKIA", "IOSFODNN7", "EXAMPLE"].concat()
}
fn aws_secret() -> String {
    ["wJalrXUtnFEMI/K7MDENG", "/bPxRfiCYEXAMPLEKEY"].concat()
}
fn github_token() -> String {
    ["ghp_", "u8jzPde0IgxLd6GncfBAepfJBd0Kh8oOOL8d"].concat()
}
fn private_key() -> String {
    let body = "YgCfrL1spNxnyVmihA/2O76UMFxFkM/R5Kjp1vRt+1fjORS/6ilI8ihN5KXSc7Tv";
    format!(
        "-----BEGIN RSA {p}-----\n{body}\n{body}\n-----END RSA {p}-----\n",
        p = "PRIVATE KEY"
    )
}

#[test]
fn the_rule_set_is_the_bundled_one() {
    assert!(rules::count() > 200, "{}", rules::count());
    assert!(rules::allowlist_compiled_once());
}

#[test]
fn real_format_fake_credentials_are_found_with_their_line_and_rule() {
    let text = format!(
        "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        aws_key_id(),
        aws_secret()
    );
    let found = scan("credentials", &text);
    assert_eq!(
        found.iter().map(|f| f.line).collect::<Vec<_>>(),
        [2, 3],
        "{found:?}"
    );
    for finding in &found {
        assert!(!finding.excerpt.contains(&aws_key_id()), "{finding}");
        assert!(!finding.excerpt.contains("bPxRfiCY"), "{finding}");
        assert!(finding.excerpt.contains(MARKER), "{finding}");
    }

    let found = scan(
        "deploy.sh",
        &format!("export GH_TOKEN={}\n", github_token()),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].rule, "github-pat");
    assert!(
        found[0]
            .to_string()
            .starts_with("deploy.sh:1 looks like a secret")
    );

    let found = scan("id_rsa", &format!("# key\n{}", private_key()));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].line, found[0].rule.as_str()), (2, "private-key"));
}

#[test]
fn redaction_removes_every_secret_and_nothing_else() {
    let text = format!(
        "{{\"command\":\"echo {} && export AWS_SECRET_ACCESS_KEY={}\",\"commit\":\"7ce85d8f3a1b2c4d5e6f708192a3b4c5d6e7f809\"}}\n{}",
        github_token(),
        aws_secret(),
        private_key()
    );
    let redacted = redact("audit.jsonl", &text);
    for secret in [github_token(), aws_secret(), "YgCfrL1spNxny".to_string()] {
        assert!(!redacted.contains(&secret), "{redacted}");
    }
    assert!(redacted.contains("7ce85d8f3a1b2c4d5e6f708192a3b4c5d6e7f809"));
    assert!(redacted.starts_with("{\"command\":\"echo (redacted) && export"));
    // Still one JSON line, and nothing left to find.
    let first = redacted.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "{first}"
    );
    assert!(scan("audit.jsonl", &redacted).is_empty(), "{redacted}");
    assert_eq!(redact("a.txt", "nothing here\n"), "nothing here\n");
}

#[test]
fn ordinary_text_is_not_taken_for_secrets() {
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    for (what, text) in [
        ("commit id", "commit 7ce85d8f3a1b2c4d5e6f708192a3b4c5d6e7f809\n".to_string()),
        (
            "digest",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n".into(),
        ),
        ("uuid", "id: 123e4567-e89b-12d3-a456-426614174000\n".into()),
        ("base64 image", format!("<img src=\"data:image/png;base64,{png}\">\n")),
        (
            "audit line",
            r#"{"id":12,"time":"2026-12-06T03:07:13+00:00","agent":"engineering","goal":"hello-api-readme","task":3,"action":"Commit","input":{"message":"Add README"},"outcome":{"commit":"2515fa6c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a"},"diff":null}"#.into(),
        ),
        ("env reference", "API_KEY = os.environ[\"API_KEY\"]\npassword: ${DB_PASSWORD}\n".into()),
        (
            "variable names",
            "- { name: anthropic, type: anthropic, apiKeyEnv: ANTHROPIC_API_KEY }\n".into(),
        ),
        (
            "token counts",
            "inputTokens: 1234\noutputTokens: 56\ncacheReadTokens: 0\n".into(),
        ),
        (
            "lock file hash",
            "checksum = \"a5b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2\"\n".into(),
        ),
        (
            "rust source",
            "let token = tokens.next().ok_or(ParseError::Eof)?;\nfn secret_ranges(hits: &[Hit]) {}\n".into(),
        ),
    ] {
        assert!(scan("x", &text).is_empty(), "{what}: {:?}", scan("x", &text));
    }
}

#[test]
fn a_diff_is_scanned_for_what_it_adds_with_the_new_files_line_numbers() {
    let diff = format!(
        "diff --git a/config.py b/config.py\n\
         index 1111111..2222222 100644\n\
         --- a/config.py\n\
         +++ b/config.py\n\
         @@ -3,0 +4,2 @@ import os\n\
         +HOST = \"localhost\"\n\
         +GH_TOKEN = \"{}\"\n\
         @@ -9 +11 @@ def main():\n\
         -OLD = \"{}\"\n\
         +OLD = os.environ[\"OLD\"]\n\
         diff --git a/img.png b/img.png\n\
         new file mode 100644\n\
         index 0000000..3333333\n\
         Binary files /dev/null and b/img.png differ\n",
        github_token(),
        aws_secret()
    );
    let found = scan_diff(&diff);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].file.as_str(), found[0].line), ("config.py", 5));
    // Taking a secret out is never refused.
    let removal = format!(
        "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -1 +0,0 @@\n-token={}\n",
        github_token()
    );
    assert!(scan_diff(&removal).is_empty());
}

#[test]
fn the_refusal_says_where_what_and_what_to_do() {
    let refused = Refused {
        findings: scan("a.txt", &format!("x\nx\naws_key = {}\n", aws_key_id())),
    };
    let message = refused.to_string();
    assert!(
        message.starts_with("not committed: a.txt:3 looks like a secret"),
        "{message}"
    );
    assert!(message.contains("environment"), "{message}");
    assert!(!message.contains(&aws_key_id()), "{message}");
}

/// What scanning costs: 1 MB of this crate's own source, printed (run with --nocapture).
#[test]
fn scanning_a_megabyte_of_source() {
    let mut text = String::new();
    for file in [
        "src/engine/mod.rs",
        "src/store/mod.rs",
        "src/gitops/delivery.rs",
    ] {
        text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
    }
    assert!(!text.is_empty());
    let mut source = String::new();
    while source.len() < 1_000_000 {
        source.push_str(&text);
    }
    let _ = scan("warm-up.rs", &source);
    let started = std::time::Instant::now();
    let found = scan("source.rs", &source);
    println!(
        "scanned {} bytes of source in {:?} ({} findings)",
        source.len(),
        started.elapsed(),
        found.len()
    );
    assert!(found.is_empty(), "{found:?}");
}
