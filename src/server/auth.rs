//! The API's bearer token: read from `--token-file`, or generated into the state directory
//! (`api-token`, mode 0600) at the first start and printed once. Every `/api/v1` request
//! must carry it (`Authorization: Bearer <token>`), compared in constant time; reads may go
//! without it when the server listens on loopback with `--public-read`. Missing: 401, as
//! for a request that never tried; wrong: 403.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{App, ServerError};

/// The file a generated token is kept in, inside the state directory.
pub const TOKEN_FILE: &str = "api-token";

/// A bearer token. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Where the token came from, so the command can say so once.
pub enum Origin {
    /// Read from a file (`--token-file`, or the one generated before).
    Read(PathBuf),
    /// Generated now and written to this file: print it once.
    Generated(PathBuf),
}

impl Token {
    pub fn new(text: &str) -> Token {
        Token(Arc::from(text.trim()))
    }

    /// The token to serve with: `given` (`--token-file`), else `<state>/api-token`,
    /// generated with mode 0600 when it does not exist.
    pub fn load_or_generate(
        given: Option<&Path>,
        state_dir: &Path,
    ) -> Result<(Token, Origin), ServerError> {
        if let Some(path) = given {
            return Ok((read(path)?, Origin::Read(path.to_path_buf())));
        }
        let path = state_dir.join(TOKEN_FILE);
        if path.exists() {
            return Ok((read(&path)?, Origin::Read(path)));
        }
        let file_error = |source| ServerError::File {
            path: path.clone(),
            source,
        };
        let text = random_hex(32).map_err(file_error)?;
        // Created 0600 from the start: there is no moment another user could read it.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(file_error)?;
        file.write_all(format!("{text}\n").as_bytes())
            .map_err(file_error)?;
        Ok((Token::new(&text), Origin::Generated(path)))
    }

    /// The token itself (to print once, or to send as a client).
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Constant-time: how much of a guess matched must not show in the time taken.
    pub fn matches(&self, offered: &str) -> bool {
        self.0.as_bytes().ct_eq(offered.as_bytes()).into()
    }
}

/// The first line of a token (or secret) file.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::File {
        path: path.to_path_buf(),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim().to_string();
    if line.is_empty() {
        return Err(ServerError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(line)
}

fn read(path: &Path) -> Result<Token, ServerError> {
    Ok(Token::new(&read_secret_file(path)?))
}

/// `bytes` random bytes from the kernel, as hex.
fn random_hex(bytes: usize) -> std::io::Result<String> {
    let mut buffer = vec![0u8; bytes];
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut urandom, &mut buffer)?;
    Ok(hex::encode(buffer))
}

/// The middleware in front of `/api/v1`.
pub async fn require(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if read && app.public_read {
        return next.run(request).await;
    }
    let offered = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match offered {
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required (Authorization: Bearer <token>)\n",
        )
            .into_response(),
        Some(token) if app.token.matches(token) => next.run(request).await,
        Some(_) => (StatusCode::FORBIDDEN, "the token is not valid\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (token, origin) = Token::load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(origin, Origin::Generated(_)));
        assert_eq!(token.reveal().len(), 64);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let (again, origin) = Token::load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(origin, Origin::Read(_)));
        assert!(again.matches(token.reveal()));
        assert!(!again.matches("guess"));
    }
}
