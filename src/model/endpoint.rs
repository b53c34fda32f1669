//! Where a provider's requests go: its `baseUrl` joined with the route of its wire format,
//! the way the official SDKs read a base URL.
//!
//! Users copy base URLs from wherever a server documents them, and the documentation of
//! llama.cpp, Ollama, vLLM and the OpenAI SDK writes them *with* `/v1`
//! (`http://127.0.0.1:8080/v1`), while Anthropic's writes them without. So both forms are
//! accepted for both formats, with or without a trailing slash, and never give `/v1/v1`:
//!
//! - OpenAI-compatible: a path that already names an API version (`/v1`, `/openai/v1`,
//!   `/v1beta/openai`) gets `/chat/completions`, as the OpenAI SDK appends it; any other path
//!   (none, or a proxy prefix) gets `/v1/chat/completions`.
//! - Anthropic: `/v1` at the end is dropped, then `/v1/messages` is appended.
//!
//! A URL pasted with the route already on it (`…/v1/chat/completions`, `…/v1/messages`) is
//! read as its base. A URL that cannot be a base (not http(s), a query, a fragment, no host)
//! is a [`BaseUrlProblem`], which `proto validate` reports where the URL is written.
//!
//! ```
//! use proto::model::endpoint::{anthropic_messages, openai_chat};
//! assert_eq!(openai_chat("http://127.0.0.1:8080/v1/").unwrap().as_str(), "http://127.0.0.1:8080/v1/chat/completions");
//! assert_eq!(openai_chat("http://localhost:11434").unwrap().as_str(), "http://localhost:11434/v1/chat/completions");
//! assert_eq!(anthropic_messages("http://127.0.0.1:8080/v1").unwrap().as_str(), "http://127.0.0.1:8080/v1/messages");
//! ```

use reqwest::Url;

/// Why a base URL cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BaseUrlProblem {
    #[error("\"{0}\" is not a URL: {1}")]
    Unparsable(String, String),
    #[error("\"{0}\" is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("\"{0}\" names no host")]
    NoHost(String),
    #[error("\"{0}\" has a query (`?…`); a base URL is scheme, host, port and path only")]
    Query(String),
    #[error("\"{0}\" has a fragment (`#…`); a base URL is scheme, host, port and path only")]
    Fragment(String),
    #[error(
        "\"{0}\" carries credentials; put the key in the variable apiKeyEnv names, not in the URL"
    )]
    Credentials(String),
}

impl BaseUrlProblem {
    /// Whether no request could be sent at all (the other problems are sent as written, but
    /// are almost certainly a mistake).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            BaseUrlProblem::Unparsable(..) | BaseUrlProblem::NotHttp(_) | BaseUrlProblem::NoHost(_)
        )
    }
}

/// Parses and checks a base URL; the first problem found, if any.
pub fn check(base: &str) -> Result<Url, BaseUrlProblem> {
    let owned = || base.to_string();
    let url =
        Url::parse(base.trim()).map_err(|e| BaseUrlProblem::Unparsable(owned(), e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(BaseUrlProblem::NotHttp(owned()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(BaseUrlProblem::NoHost(owned()));
    }
    if url.query().is_some() {
        return Err(BaseUrlProblem::Query(owned()));
    }
    if url.fragment().is_some() {
        return Err(BaseUrlProblem::Fragment(owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BaseUrlProblem::Credentials(owned()));
    }
    Ok(url)
}

/// The path segments of `url`, without empty ones (trailing or doubled slashes).
fn segments(url: &Url) -> Vec<String> {
    url.path_segments()
        .map(|s| s.filter(|s| !s.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// `v1`, `v2`, `v1beta`, `v1alpha1`: a segment naming an API version.
fn is_version(segment: &str) -> bool {
    let Some(rest) = segment.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest[digits..].bytes().all(|b| b.is_ascii_alphanumeric())
}

fn with_segments(mut url: Url, segments: &[String]) -> Url {
    url.set_path(&format!("/{}", segments.join("/")));
    url
}

/// The chat-completions endpoint of an OpenAI-compatible server at `base`.
pub fn openai_chat(base: &str) -> Result<Url, BaseUrlProblem> {
    let url = check(base).or_else(lenient)?;
    let mut path = segments(&url);
    if path.ends_with(&["chat".to_string(), "completions".to_string()]) {
        path.truncate(path.len() - 2);
    }
    if !path.iter().any(|s| is_version(s)) {
        path.push("v1".into());
    }
    path.extend(["chat".to_string(), "completions".to_string()]);
    Ok(with_segments(url, &path))
}

/// The Messages endpoint of an Anthropic-compatible server at `base`.
pub fn anthropic_messages(base: &str) -> Result<Url, BaseUrlProblem> {
    let url = check(base).or_else(lenient)?;
    let mut path = segments(&url);
    if path.last().is_some_and(|s| s == "messages") {
        path.pop();
    }
    if path.last().is_some_and(|s| s == "v1") {
        path.pop();
    }
    path.extend(["v1".to_string(), "messages".to_string()]);
    Ok(with_segments(url, &path))
}

/// A URL with a problem that still leaves it usable is used as written (validation has
/// warned about it); only one that cannot be sent to is refused.
fn lenient(problem: BaseUrlProblem) -> Result<Url, BaseUrlProblem> {
    if problem.is_fatal() {
        return Err(problem);
    }
    let raw = match &problem {
        BaseUrlProblem::Query(s) | BaseUrlProblem::Fragment(s) | BaseUrlProblem::Credentials(s) => {
            s
        }
        _ => return Err(problem),
    };
    Url::parse(raw.trim()).map_err(|_| problem.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_base_urls_as_the_sdks_read_them() {
        for (base, want) in [
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:8080/",
                "http://127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:8080/v1",
                "http://127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:8080/v1/",
                "http://127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "http://127.0.0.1:8080/v1/chat/completions",
                "http://127.0.0.1:8080/v1/chat/completions",
            ),
            (
                "https://api.groq.com/openai/v1",
                "https://api.groq.com/openai/v1/chat/completions",
            ),
            (
                "https://generativelanguage.googleapis.com/v1beta/openai/",
                "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
            ),
            (
                "http://proxy.local/llm",
                "http://proxy.local/llm/v1/chat/completions",
            ),
        ] {
            assert_eq!(openai_chat(base).unwrap().as_str(), want, "{base}");
        }
    }

    #[test]
    fn anthropic_base_urls_never_double_the_version() {
        for base in [
            "https://api.anthropic.com",
            "https://api.anthropic.com/",
            "https://api.anthropic.com/v1",
            "https://api.anthropic.com/v1/",
            "https://api.anthropic.com/v1/messages",
        ] {
            assert_eq!(
                anthropic_messages(base).unwrap().as_str(),
                "https://api.anthropic.com/v1/messages",
                "{base}"
            );
        }
        assert_eq!(
            anthropic_messages("http://gw.local/anthropic/")
                .unwrap()
                .as_str(),
            "http://gw.local/anthropic/v1/messages"
        );
    }

    #[test]
    fn problems_are_named() {
        assert!(matches!(
            check("localhost:8080"),
            Err(BaseUrlProblem::NotHttp(_))
        ));
        assert!(matches!(check("ftp://x/"), Err(BaseUrlProblem::NotHttp(_))));
        assert!(matches!(
            check("not a url"),
            Err(BaseUrlProblem::Unparsable(..))
        ));
        assert!(matches!(
            check("http://x/v1?key=1"),
            Err(BaseUrlProblem::Query(_))
        ));
        assert!(matches!(
            check("http://x/v1#a"),
            Err(BaseUrlProblem::Fragment(_))
        ));
        assert!(matches!(
            check("http://me:pw@x/"),
            Err(BaseUrlProblem::Credentials(_))
        ));
        // Usable despite the warning: sent as written.
        assert_eq!(
            openai_chat("http://x/v1?a=1").unwrap().as_str(),
            "http://x/v1/chat/completions?a=1"
        );
        assert!(openai_chat("localhost:8080").is_err());
        assert!(is_version("v1") && is_version("v1beta") && is_version("v2"));
        assert!(!is_version("v") && !is_version("video") && !is_version("llm"));
    }
}
