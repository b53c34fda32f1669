//! Talking to remotes with libgit2: telling URLs from paths, resolving relative repository
//! URLs, credentials, fetching with explicit refspecs and pushing without ever forcing.
//! Shared by the source (cache clones) and by [`crate::gitops`] (writeback, workspaces).

use std::cell::RefCell;
use std::path::{Component, Path, PathBuf};

use git2::{
    Cred, CredentialType, ErrorCode, FetchOptions, Oid, PushOptions, Remote, RemoteCallbacks,
    Repository,
};

/// Whether `location` names a remote rather than a local path: it has a scheme
/// (`file://`, `git://`, `https://`, `ssh://`) or is scp-like (`user@host:path`, where no `/`
/// comes before the first `:`, as git itself decides).
pub(crate) fn is_url(location: &str) -> bool {
    if location.contains("://") {
        return true;
    }
    match location.find(':') {
        Some(i) if i > 0 => !location[..i].contains('/'),
        _ => false,
    }
}

/// Resolves `relative` against a remote URL the way git resolves relative submodule URLs:
/// `git://h/company.git` + `../x.git` is `git://h/x.git`.
pub(crate) fn join_url(base: &str, relative: &str) -> String {
    let base = base.trim_end_matches('/');
    let (prefix, path) = if let Some(i) = base.find("://") {
        let host_start = i + 3;
        match base[host_start..].find('/') {
            Some(j) => base.split_at(host_start + j),
            None => (base, ""),
        }
    } else if let Some(i) = base.find(':') {
        base.split_at(i + 1)
    } else {
        ("", base)
    };
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for part in relative.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!(
        "{prefix}{}{}",
        if absolute { "/" } else { "" },
        parts.join("/")
    )
}

/// `path` with `.` and `..` resolved lexically: the target need not exist yet.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// A directory name for a URL's cache clone: every character outside `[A-Za-z0-9._-]`
/// becomes `_`.
pub(crate) fn sanitize(url: &str) -> String {
    let name: String = url
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // A name made only of dots would mean the cache folder itself or its parent.
    if name.chars().all(|c| c == '.') {
        format!("_{name}")
    } else {
        name
    }
}

/// Callbacks offering credentials the way the git CLI finds them: the SSH agent and the
/// usual key files for SSH, git's credential helpers for HTTPS. Each kind is offered once,
/// since libgit2 asks again after every refusal and would otherwise loop forever.
pub(crate) fn callbacks<'a>() -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let mut tried_agent = false;
    let mut tried_keys = false;
    let mut tried_helper = false;
    let mut tried_default = false;
    callbacks.credentials(move |url, username, allowed| {
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username.unwrap_or("git");
            if !tried_agent {
                tried_agent = true;
                if let Ok(cred) = Cred::ssh_key_from_agent(user) {
                    return Ok(cred);
                }
            }
            if !tried_keys {
                tried_keys = true;
                if let Some(home) = std::env::var_os("HOME") {
                    let ssh = Path::new(&home).join(".ssh");
                    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                        let key = ssh.join(name);
                        if key.exists() {
                            return Cred::ssh_key(user, None, &key, None);
                        }
                    }
                }
            }
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !tried_helper {
            tried_helper = true;
            if let Ok(config) = git2::Config::open_default()
                && let Ok(cred) = Cred::credential_helper(&config, url, username)
            {
                return Ok(cred);
            }
        }
        if allowed.contains(CredentialType::DEFAULT) && !tried_default {
            tried_default = true;
            return Cred::default();
        }
        Err(git2::Error::from_str(&format!(
            "no credentials accepted for {url} (tried the SSH agent, ~/.ssh keys and git credential helpers)"
        )))
    });
    callbacks
}

/// The branch the remote's HEAD points at (`main` for `refs/heads/main`).
pub(crate) fn default_branch(repo: &Repository, url: &str) -> Result<Option<String>, git2::Error> {
    let mut remote = repo.remote_anonymous(url)?;
    let connection = remote.connect_auth(git2::Direction::Fetch, Some(callbacks()), None)?;
    let branch = match connection.default_branch() {
        Ok(buf) => buf
            .as_str()
            .ok()
            .and_then(|name| name.strip_prefix("refs/heads/"))
            .map(str::to_owned),
        // An empty repository advertises no HEAD.
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(e),
    };
    Ok(branch)
}

/// Fetches `refspecs` through `remote` (an anonymous remote for a URL, or a configured
/// one such as `origin`), returning the branches the remote advertised. A source ref the
/// remote lacks is not an error: the destination is simply left alone.
pub(crate) fn fetch(
    remote: &mut Remote<'_>,
    refspecs: &[String],
) -> Result<Vec<(String, Oid)>, git2::Error> {
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks());
    options.download_tags(git2::AutotagOption::None);
    remote.fetch(refspecs, Some(&mut options), None)?;
    // The advertisement stays readable after the fetch disconnects.
    let heads = remote
        .list()?
        .iter()
        .map(|head| (head.name().to_owned(), head.oid()))
        .collect();
    Ok(heads)
}

/// What became of a push.
#[derive(Debug)]
pub(crate) enum PushOutcome {
    Pushed,
    /// Refused as not a fast-forward (by libgit2 before sending, or by the server), or
    /// declined by the server: the caller fetches, rebuilds and tries again.
    Rejected(String),
}

/// Pushes `local_ref` to `remote_ref` through `remote`, never forcing.
pub(crate) fn push(
    remote: &mut Remote<'_>,
    local_ref: &str,
    remote_ref: &str,
) -> Result<PushOutcome, git2::Error> {
    let refused: RefCell<Option<String>> = RefCell::new(None);
    let mut callbacks = callbacks();
    callbacks.push_update_reference(|name, status| {
        if let Some(message) = status {
            *refused.borrow_mut() = Some(format!("{name}: {message}"));
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    let refspec = format!("{local_ref}:{remote_ref}");
    match remote.push(&[refspec.as_str()], Some(&mut options)) {
        Ok(()) => {}
        Err(e) if e.code() == ErrorCode::NotFastForward => {
            return Ok(PushOutcome::Rejected(e.message().to_owned()));
        }
        Err(e) => return Err(e),
    }
    drop(options);
    match refused.into_inner() {
        Some(message) => Ok(PushOutcome::Rejected(message)),
        None => Ok(PushOutcome::Pushed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        assert!(is_url("git://h/x.git"));
        assert!(is_url("https://h/x.git"));
        assert!(is_url("file:///srv/x.git"));
        assert!(is_url("git@github.com:org/x.git"));
        assert!(is_url("host:x.git"));
        assert!(!is_url("../x.git"));
        assert!(!is_url("/srv/x.git"));
        assert!(!is_url("./a:b"));
        assert!(!is_url("x.git"));
    }

    #[test]
    fn joins_like_git_submodules() {
        assert_eq!(join_url("git://h/company.git", "../x.git"), "git://h/x.git");
        assert_eq!(
            join_url("git://h/company.git/", "../x.git"),
            "git://h/x.git"
        );
        assert_eq!(join_url("https://h/org/company", "../x"), "https://h/org/x");
        assert_eq!(
            join_url("git@h:org/company.git", "../x.git"),
            "git@h:org/x.git"
        );
        assert_eq!(
            join_url("file:///srv/company.git", "../x.git"),
            "file:///srv/x.git"
        );
        assert_eq!(
            join_url("ssh://git@h:22/a/b.git", "./c.git"),
            "ssh://git@h:22/a/b.git/c.git"
        );
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("/a/company/../x.git")),
            PathBuf::from("/a/x.git")
        );
        assert_eq!(normalize(Path::new("/a/./b/../../c")), PathBuf::from("/c"));
    }

    #[test]
    fn sanitizes() {
        assert_eq!(
            sanitize("git://127.0.0.1:9418/co.git"),
            "git___127.0.0.1_9418_co.git"
        );
        assert_eq!(sanitize(".."), "_..");
    }
}
