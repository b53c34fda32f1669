//! The entropy check: a random-looking value assigned to a secret-like name
//! (`aws_access_key_id = AKIA…`, `"api_token": "…"`, `PASSWORD=…`), for what no rule names —
//! an in-house key, a vendor the rule set does not know, or a documented example key that
//! the rules' allowlists let through on purpose (`…EXAMPLE`), which in a commit is still a
//! credential-shaped value where a reference to the environment belongs.
//!
//! Only values *assigned to* such a name count, never a random-looking string on its own:
//! the controller's records are full of commit ids, content hashes, UUIDs and base64, and a
//! check that blocked those would block ordinary work. For the same reason hex strings
//! (commit ids, digests) and UUIDs are never taken for secrets here: a hex key behind a
//! secret-like name is the rules' `generic-api-key` business, which weighs it properly.

use std::sync::LazyLock;

use regex::Regex;

use super::rules::Hit;

/// The rule id findings of this check carry.
pub(super) const RULE: &str = "high-entropy-assignment";

/// Shorter values are names or placeholders more often than secrets.
const MIN_LEN: usize = 16;
/// Bits per character: random base64 of 16+ characters is above 3.7, English-like
/// identifiers and sentences below 3.3.
const MIN_ENTROPY: f64 = 3.5;

/// A secret-like name, then an assignment (`=`, `:`, `:=`, `=>`, quoted or not, possibly
/// JSON-escaped), then the value.
static ASSIGNMENT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)[a-z0-9_.-]*(?:secret|passw(?:or)?d|pwd|token|api[_.-]?key|access[_.-]?key|private[_.-]?key|client[_.-]?key|[_.-]key|credential|auth)[a-z0-9_.-]*[\\"'`]{0,3}[ \t]*(?::=|=>|=|:)[ \t]*[\\"'`]{0,3}([A-Za-z0-9+/=_.~-]{16,512})"#,
    )
    .map_err(|e| tracing::error!("the entropy check's pattern does not compile: {e}"))
    .ok()
});

/// Every value in `text` this check takes for a secret.
pub(super) fn hits(text: &str) -> Vec<Hit> {
    let Some(assignment) = ASSIGNMENT.as_ref() else {
        return Vec::new();
    };
    assignment
        .captures_iter(text)
        .filter_map(|c| c.get(1))
        .filter(|value| looks_random(value.as_str()))
        .map(|value| Hit {
            start: value.start(),
            end: value.end(),
            rule: RULE.to_string(),
            description: "a random-looking value assigned to a secret-like name".to_string(),
        })
        .collect()
}

/// Long enough, letters and digits mixed, not a hex digest or UUID, not a path or a
/// dotted name, and random enough.
fn looks_random(value: &str) -> bool {
    let value = value.trim_end_matches('=');
    if value.len() < MIN_LEN {
        return false;
    }
    let has_digit = value.bytes().any(|b| b.is_ascii_digit());
    let has_letter = value.bytes().any(|b| b.is_ascii_alphabetic());
    let hex = value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    // `src/a/b.rs`, `example.com/path`, `release-notes.v2.md`: paths and dotted names.
    let path_like = value.contains('.') || value.matches('/').count() > 2;
    has_digit && has_letter && !hex && !path_like && shannon(value) >= MIN_ENTROPY
}

/// Shannon entropy in bits per character.
pub(super) fn shannon(value: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in value.bytes() {
        counts[usize::from(b)] += 1;
    }
    let len = value.len() as f64;
    counts
        .iter()
        .filter(|&&n| n > 0)
        .map(|&n| {
            let p = f64::from(n) / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_behind_secret_names_are_found_and_ordinary_ones_are_not() {
        for secret in [
            "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
            "export API_TOKEN=Zk93hQ2LmX8pVt4RwB7cN1sD",
            r#"{"client_secret": "q8Vn2Lx7Rt5Kp3Wm9Zb4Hc6J"}"#,
            r#"{\"db_password\":\"Xw7Kq2Lp9Vr4Mt6Zn3B\"}"#,
        ] {
            assert_eq!(hits(secret).len(), 1, "{secret}");
        }
        for plain in [
            "commit_token = 7ce85d8f3a1b2c4d5e6f708192a3b4c5d6e7f809",
            "auth_id: 123e4567-e89b-12d3-a456-426614174000",
            "token_budget: 100000",
            "password = ${DB_PASSWORD}",
            "api_key = os.environ['API_KEY']",
            "secret_file: src/secrets/rules2.rs",
            "tokens: inputTokens outputTokens",
            "token: changeme-please-now",
            "credentials: see docs/credentials-v2.md",
        ] {
            assert!(hits(plain).is_empty(), "{plain}");
        }
    }

    #[test]
    fn entropy_is_bits_per_character() {
        assert_eq!(shannon("aaaa"), 0.0);
        assert!((shannon("ab") - 1.0).abs() < 1e-9);
    }
}
