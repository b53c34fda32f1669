//! The MCP client: agents use the tools of the MCP servers a company declares in `.mcp.json`
//! ([`McpServer`]), named `mcp__<server>__<tool>` as in Claude Code.
//!
//! [`McpClient`] is one connection, over stdio or streamable HTTP. A stdio server runs on the
//! task's computer, in its workspace, beside the files its tools are about: it is started
//! with [`Computer::attach`] (on this host or over SSH alike), whose streams carry the
//! protocol, and it is stopped with everything it started when the client is dropped. HTTP
//! servers are reached from the controller.
//! [`McpPool`] holds the servers an agent may use, connects to each the first time it is
//! needed, reuses the connection afterwards and routes a qualified tool name to its server.
//!
//! ```no_run
//! # async fn demo(servers: Vec<proto::spec::claude::McpServer>) -> Result<(), proto::mcp::McpError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use proto::computer::{Local, Workspace};
//! use proto::mcp::McpPool;
//!
//! let computer = Arc::new(Local::new("here", "/srv/work"));
//! let workspace = Workspace::new("/srv/work/task-1");
//! let pool = McpPool::new(servers, computer, workspace, Duration::from_secs(30));
//! let (tools, _unreachable) = pool.tools().await;
//! let result = pool
//!     .call("mcp__files__read_text_file", serde_json::json!({"path": "README.md"}))
//!     .await?;
//! println!("{} {}", tools.len(), result.content);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, ContentBlock,
    Implementation, ResourceContents,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServiceError, ServiceExt};

use crate::computer::{AttachRequest, Computer, ComputerError, Origin, Process, Workspace};
use crate::spec::claude::{McpServer, McpTransport};

/// The prefix of every MCP tool name an agent sees.
pub const PREFIX: &str = "mcp__";

/// What went wrong talking to an MCP server. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The server's command could not be started (not found, not executable, bad cwd).
    #[error("MCP server \"{server}\": cannot start `{command}`: {source}")]
    Spawn {
        server: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// The server started (or the URL was reached) but the MCP handshake failed.
    #[error("MCP server \"{server}\": cannot connect: {reason}")]
    Connect { server: String, reason: String },
    /// The declaration cannot be used as given (a header that is not valid HTTP, say).
    #[error("MCP server \"{server}\": {reason}")]
    Config { server: String, reason: String },
    /// The connection broke or the server answered something the protocol does not allow.
    #[error("MCP server \"{server}\": protocol error: {reason}")]
    Protocol { server: String, reason: String },
    /// The server answered a request with a JSON-RPC error (invalid arguments, say).
    #[error("MCP server \"{server}\" refused {request}: {message} (code {code})")]
    Refused {
        server: String,
        request: String,
        code: i32,
        message: String,
    },
    /// No answer within the client's timeout.
    #[error("MCP server \"{server}\": no answer to {request} within {after:?}")]
    Timeout {
        server: String,
        request: String,
        after: Duration,
    },
    /// The server does not offer a tool of that name.
    #[error("MCP server \"{server}\" has no tool \"{tool}\"{}", list_hint(known))]
    UnknownTool {
        server: String,
        tool: String,
        known: Vec<String>,
    },
    /// A server that is not among those this pool may use.
    #[error("no MCP server \"{server}\" here{}", list_hint(known))]
    UnknownServer { server: String, known: Vec<String> },
    /// Arguments that are not a JSON object, which is all MCP accepts.
    #[error("MCP tool \"{tool}\" of server \"{server}\": {reason}")]
    InvalidArguments {
        server: String,
        tool: String,
        reason: String,
    },
    /// A name that is not of the form `mcp__<server>__<tool>`.
    #[error("\"{name}\" is not an MCP tool name (expected mcp__<server>__<tool>)")]
    NotMcpTool { name: String },
}

fn list_hint(known: &[String]) -> String {
    if known.is_empty() {
        String::new()
    } else {
        format!(" (there are: {})", known.join(", "))
    }
}

impl McpError {
    /// Whether the connection this came from is no longer usable, so a pool reconnects
    /// before the next request instead of failing it again.
    fn breaks_connection(&self) -> bool {
        matches!(self, McpError::Protocol { .. })
    }
}

/// A tool offered by an MCP server, as an agent sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct McpTool {
    /// `mcp__<server>__<tool>`: the name the model calls it by.
    pub qualified_name: String,
    /// The server's name for it in `.mcp.json`.
    pub server: String,
    /// The tool's own name on its server.
    pub name: String,
    pub description: String,
    /// The JSON Schema of its arguments, as the server gave it.
    pub input_schema: serde_json::Value,
}

/// What a tool call returned, flattened to text for the model.
#[derive(Clone, Debug, PartialEq)]
pub struct McpCallResult {
    /// Text parts joined by newlines; images, audio and binary resources summarized in
    /// brackets; structured content as JSON when there is nothing else.
    pub content: String,
    /// The tool reported failure (the call itself went through).
    pub is_error: bool,
}

/// `mcp__<server>__<tool>`.
pub fn qualified_name(server: &str, tool: &str) -> String {
    format!("{PREFIX}{server}__{tool}")
}

/// Splits `mcp__<server>__<tool>` into server and tool. Server names may contain `-` and a
/// single `_`, tool names anything: the split is at the first `__` after the prefix.
pub fn split_qualified_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?;
    let (server, tool) = rest.split_once("__")?;
    (!server.is_empty() && !tool.is_empty()).then_some((server, tool))
}

/// One connection to one MCP server.
pub struct McpClient {
    server: String,
    service: RunningService<RoleClient, ClientConfig>,
    timeout: Duration,
    /// Tool names, listed once so an unknown name is caught here with a clear error rather
    /// than as whatever the server makes of it.
    known_tools: tokio::sync::Mutex<Option<BTreeSet<String>>>,
    /// A stdio server's process: the end of its stderr says why it broke off, if it did.
    /// Declared last so it drops last: the service is cancelled before the server is stopped.
    process: Option<Process>,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl McpClient {
    /// Connects to `server`: starts its command on `computer` in `workspace` (stdio; the
    /// computer's plain environment, the declared `env` added, no sandbox: the company
    /// declares its servers, as it does its hooks, and each tool call goes through `act()`)
    /// or reaches its URL (HTTP), then runs the MCP handshake. `timeout` bounds the whole
    /// connection and, later, each request.
    pub async fn connect(
        server: &McpServer,
        computer: &dyn Computer,
        workspace: &Workspace,
        timeout: Duration,
    ) -> Result<McpClient, McpError> {
        let name = server.name.clone();
        let handshake = ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("proto", env!("CARGO_PKG_VERSION")),
        );
        let connect_timeout = |name: &str| McpError::Timeout {
            server: name.to_string(),
            request: "initialize".into(),
            after: timeout,
        };
        match &server.transport {
            McpTransport::Stdio { command, args, env } => {
                let started = start(&name, command, args, env, computer, workspace);
                let (transport, process) = match tokio::time::timeout(timeout, started).await {
                    Ok(started) => started?,
                    Err(_) => return Err(connect_timeout(&name)),
                };
                let connected = tokio::time::timeout(timeout, handshake.serve(transport)).await;
                let service = match connected {
                    Ok(Ok(service)) => service,
                    // The process drops here, so a server that hangs or fails is not left
                    // behind.
                    Ok(Err(e)) => {
                        return Err(McpError::Connect {
                            server: name,
                            reason: with_stderr(e.to_string(), &process).await,
                        });
                    }
                    Err(_) => return Err(connect_timeout(&name)),
                };
                Ok(McpClient {
                    server: name,
                    service,
                    timeout,
                    known_tools: tokio::sync::Mutex::new(None),
                    process: Some(process),
                })
            }
            McpTransport::Http { url, headers } => {
                let config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .custom_headers(http_headers(&name, headers)?);
                let transport = StreamableHttpClientTransport::from_config(config);
                let service = match tokio::time::timeout(timeout, handshake.serve(transport)).await
                {
                    Ok(Ok(service)) => service,
                    Ok(Err(e)) => {
                        return Err(McpError::Connect {
                            server: name,
                            reason: format!("{url}: {}", error_chain(&e)),
                        });
                    }
                    Err(_) => return Err(connect_timeout(&name)),
                };
                Ok(McpClient {
                    server: name,
                    service,
                    timeout,
                    known_tools: tokio::sync::Mutex::new(None),
                    process: None,
                })
            }
        }
    }

    /// The server's name in `.mcp.json`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Every tool the server offers (all pages).
    pub async fn list_tools(&self) -> Result<Vec<McpTool>, McpError> {
        let tools = self
            .within("tools/list", self.service.peer().list_all_tools())
            .await?;
        let listed: Vec<McpTool> = tools
            .into_iter()
            .map(|tool| McpTool {
                qualified_name: qualified_name(&self.server, &tool.name),
                server: self.server.clone(),
                name: tool.name.to_string(),
                description: tool
                    .description
                    .map(|d| d.to_string())
                    .or(tool.title)
                    .unwrap_or_default(),
                input_schema: serde_json::Value::Object((*tool.input_schema).clone()),
            })
            .collect();
        *self.known_tools.lock().await = Some(listed.iter().map(|t| t.name.clone()).collect());
        Ok(listed)
    }

    /// Calls `tool` (its name on this server) with `arguments` (a JSON object, or null for
    /// none). A tool that fails reports `is_error`; an `Err` means the call did not happen
    /// or got no usable answer.
    pub async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Value,
    ) -> Result<McpCallResult, McpError> {
        self.check_tool(tool).await?;
        let mut params = CallToolRequestParams::new(tool.to_string());
        match arguments {
            serde_json::Value::Object(map) => params = params.with_arguments(map),
            serde_json::Value::Null => {}
            other => {
                return Err(McpError::InvalidArguments {
                    server: self.server.clone(),
                    tool: tool.to_string(),
                    reason: format!("arguments must be a JSON object, not {other}"),
                });
            }
        }
        let result = self
            .within(
                &format!("tools/call {tool}"),
                self.service.peer().call_tool(params),
            )
            .await?;
        Ok(flatten(result))
    }

    /// Closes the connection: a stdio server gets its stdin closed and a moment to exit
    /// before its process group is killed; an HTTP session is ended.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.timeout, self.service.close()).await;
    }

    /// Fails with [`McpError::UnknownTool`] unless the server lists `tool`. The list is
    /// fetched again once before failing, in case the server's tools changed.
    async fn check_tool(&self, tool: &str) -> Result<(), McpError> {
        let cached = self.known_tools.lock().await.clone();
        if cached.as_ref().is_some_and(|known| known.contains(tool)) {
            return Ok(());
        }
        let known: Vec<String> = self
            .list_tools()
            .await?
            .into_iter()
            .map(|t| t.name)
            .collect();
        if known.iter().any(|name| name == tool) {
            return Ok(());
        }
        Err(McpError::UnknownTool {
            server: self.server.clone(),
            tool: tool.to_string(),
            known,
        })
    }

    /// Runs one request under the client's timeout, naming the server and the request in
    /// any error.
    async fn within<T>(
        &self,
        request: &str,
        future: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, McpError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(ServiceError::McpError(e))) => Err(McpError::Refused {
                server: self.server.clone(),
                request: request.to_string(),
                code: e.code.0,
                message: e.message.to_string(),
            }),
            Ok(Err(ServiceError::Timeout { timeout })) => Err(McpError::Timeout {
                server: self.server.clone(),
                request: request.to_string(),
                after: timeout,
            }),
            Ok(Err(e)) => {
                let reason = format!("{request}: {}", error_chain(&e));
                Err(McpError::Protocol {
                    server: self.server.clone(),
                    reason: match &self.process {
                        Some(process) => with_stderr(reason, process).await,
                        None => reason,
                    },
                })
            }
            Err(_) => Err(McpError::Timeout {
                server: self.server.clone(),
                request: request.to_string(),
                after: self.timeout,
            }),
        }
    }
}

/// The streams of a stdio server's process, as rmcp's transport takes them.
type Streams = (
    std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
);

/// Starts a stdio server on `computer` in `workspace` (see [`McpClient::connect`]).
async fn start(
    server: &str,
    command: &str,
    args: &[String],
    env: &BTreeMap<String, String>,
    computer: &dyn Computer,
    workspace: &Workspace,
) -> Result<(Streams, Process), McpError> {
    let spawn_error = |source| McpError::Spawn {
        server: server.to_string(),
        command: command.to_string(),
        source,
    };
    if command.is_empty() {
        return Err(spawn_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "empty command",
        )));
    }
    let request = AttachRequest {
        program: command.to_string(),
        args: args.to_vec(),
        env: env.clone(),
        origin: Origin::Controller,
    };
    match computer.attach(Some(workspace), &request).await {
        Ok(attached) => Ok(((attached.stdout, attached.stdin), attached.process)),
        Err(ComputerError::Spawn { source, .. }) => Err(spawn_error(source)),
        Err(e) => Err(McpError::Connect {
            server: server.to_string(),
            reason: format!("cannot start `{command}` on {}: {e}", computer.name()),
        }),
    }
}

/// How much of a stdio server's stderr an error quotes (its end).
const STDERR_TAIL: usize = 4 * 1024;

/// `reason`, followed by what the server wrote to stderr, which usually says why it stopped.
async fn with_stderr(reason: String, process: &Process) -> String {
    // The server has usually just exited: give the reader a moment to catch its last words.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stderr = process.stderr();
    let mut tail = stderr.trim();
    if tail.len() > STDERR_TAIL {
        let mut cut = tail.len() - STDERR_TAIL;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = &tail[cut..];
    }
    if tail.is_empty() {
        reason
    } else {
        format!("{reason}; its stderr ends: {tail}")
    }
}

/// `.mcp.json` headers as HTTP headers.
fn http_headers(
    server: &str,
    headers: &BTreeMap<String, String>,
) -> Result<HashMap<HeaderName, HeaderValue>, McpError> {
    headers
        .iter()
        .map(|(name, value)| {
            let bad = |what: &str| McpError::Config {
                server: server.to_string(),
                reason: format!("header \"{name}\": {what}"),
            };
            Ok((
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("not a header name"))?,
                HeaderValue::from_str(value).map_err(|_| bad("value is not valid in HTTP"))?,
            ))
        })
        .collect()
}

/// An error with its causes, which is where transports put what actually happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Many errors already repeat their cause in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Flattens a tool result to text for the model.
fn flatten(result: CallToolResult) -> McpCallResult {
    let mut parts: Vec<String> = result.content.iter().map(describe).collect();
    if parts.is_empty()
        && let Some(structured) = &result.structured_content
    {
        parts.push(structured.to_string());
    }
    McpCallResult {
        content: parts.join("\n"),
        is_error: result.is_error.unwrap_or(false),
    }
}

/// One content block as text: text as is, anything else summarized.
fn describe(block: &ContentBlock) -> String {
    match block {
        ContentBlock::Text(text) => text.text.clone(),
        ContentBlock::Image(image) => {
            format!(
                "[image: {}, {} bytes]",
                image.mime_type,
                base64_len(&image.data)
            )
        }
        ContentBlock::Audio(audio) => {
            format!(
                "[audio: {}, {} bytes]",
                audio.mime_type,
                base64_len(&audio.data)
            )
        }
        ContentBlock::Resource(embedded) => match &embedded.resource {
            ResourceContents::TextResourceContents { uri, text, .. } => {
                format!("[resource {uri}]\n{text}")
            }
            ResourceContents::BlobResourceContents {
                uri,
                mime_type,
                blob,
                ..
            } => format!(
                "[resource {uri}: {}, {} bytes]",
                mime_type.as_deref().unwrap_or("binary"),
                base64_len(blob)
            ),
            _ => "[resource]".to_string(),
        },
        ContentBlock::ResourceLink(link) => format!("[resource link {}: {}]", link.uri, link.name),
        // Kinds newer than this client: named by their wire type so the model knows
        // something was there.
        other => {
            let kind = serde_json::to_value(other)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(String::from))
                .unwrap_or_else(|| "unknown".to_string());
            format!("[{kind} content]")
        }
    }
}

/// The decoded size of base64 text, without decoding it.
fn base64_len(data: &str) -> usize {
    let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding)
}

/// One MCP server's tool as a session's [`Tool`](crate::tools::Tool): its calls go to the
/// server through the session's pool. What it does there cannot be looked at afterwards, so
/// it is journaled as reaching outside.
pub struct ServerTool {
    pool: Arc<McpPool>,
    listed: McpTool,
}

impl ServerTool {
    pub fn new(pool: Arc<McpPool>, listed: McpTool) -> Self {
        ServerTool { pool, listed }
    }

    /// Every tool the pool's servers offer, each a [`ServerTool`]. A server that cannot be
    /// reached is skipped with a warning: its tools are simply absent from the session.
    pub async fn all(pool: &Arc<McpPool>) -> Vec<ServerTool> {
        let (tools, errors) = pool.tools().await;
        for e in errors {
            tracing::warn!("MCP server unavailable: {e}");
        }
        tools
            .into_iter()
            .map(|listed| ServerTool::new(pool.clone(), listed))
            .collect()
    }
}

#[async_trait::async_trait]
impl crate::tools::Tool for ServerTool {
    // The model calls it by its qualified name; the server's own name is `listed.name`.
    #[allow(clippy::misnamed_getters)]
    fn name(&self) -> &str {
        &self.listed.qualified_name
    }

    fn description(&self) -> &str {
        &self.listed.description
    }

    fn input_schema(&self) -> serde_json::Value {
        self.listed.input_schema.clone()
    }

    async fn run(
        &self,
        input: &serde_json::Value,
        _ctx: &crate::tools::ToolContext<'_>,
    ) -> Result<crate::tools::ToolOutput, crate::tools::ToolError> {
        let result = self
            .pool
            .call(&self.listed.qualified_name, input.clone())
            .await
            .map_err(|e| crate::tools::ToolError::Failed(e.to_string()))?;
        Ok(crate::tools::ToolOutput {
            content: result.content,
            is_error: result.is_error,
            ..crate::tools::ToolOutput::default()
        })
    }
}

/// The MCP servers an agent may use, connected on first use and kept connected.
pub struct McpPool {
    /// Where stdio servers start: the task's computer and workspace.
    computer: Arc<dyn Computer>,
    workspace: Workspace,
    timeout: Duration,
    servers: BTreeMap<String, Slot>,
}

/// One server and its connection, if made. The lock is held while connecting so concurrent
/// first uses share one connection instead of racing to start two servers.
struct Slot {
    server: McpServer,
    client: tokio::sync::Mutex<Option<Arc<McpClient>>>,
}

impl McpPool {
    /// A pool of `servers`, the stdio ones started on `computer` in `workspace`, each
    /// request bounded by `timeout`.
    pub fn new(
        servers: impl IntoIterator<Item = McpServer>,
        computer: Arc<dyn Computer>,
        workspace: Workspace,
        timeout: Duration,
    ) -> Self {
        McpPool {
            computer,
            workspace,
            timeout,
            servers: servers
                .into_iter()
                .map(|server| {
                    let slot = Slot {
                        server: server.clone(),
                        client: tokio::sync::Mutex::new(None),
                    };
                    (server.name, slot)
                })
                .collect(),
        }
    }

    /// The names of the servers in the pool.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }

    /// The connection to `server`, made now if there is none yet.
    pub async fn client(&self, server: &str) -> Result<Arc<McpClient>, McpError> {
        let slot = self
            .servers
            .get(server)
            .ok_or_else(|| McpError::UnknownServer {
                server: server.to_string(),
                known: self.servers.keys().cloned().collect(),
            })?;
        let mut client = slot.client.lock().await;
        if let Some(client) = client.as_ref() {
            return Ok(client.clone());
        }
        let connected = McpClient::connect(
            &slot.server,
            self.computer.as_ref(),
            &self.workspace,
            self.timeout,
        )
        .await?;
        let connected = Arc::new(connected);
        *client = Some(connected.clone());
        Ok(connected)
    }

    /// Every tool of every server. A server that cannot be reached does not hide the others'
    /// tools: its error is returned alongside.
    pub async fn tools(&self) -> (Vec<McpTool>, Vec<McpError>) {
        let listings = futures_util::future::join_all(self.servers.keys().map(|server| async {
            let client = self.client(server).await?;
            let listed = client.list_tools().await;
            if let Err(e) = &listed {
                self.forget_if_broken(&client, e).await;
            }
            listed
        }))
        .await;
        let (mut tools, mut errors) = (Vec::new(), Vec::new());
        for listing in listings {
            match listing {
                Ok(listed) => tools.extend(listed),
                Err(e) => errors.push(e),
            }
        }
        (tools, errors)
    }

    /// Calls the tool named `mcp__<server>__<tool>` on its server.
    pub async fn call(
        &self,
        qualified_name: &str,
        arguments: serde_json::Value,
    ) -> Result<McpCallResult, McpError> {
        let (server, tool) =
            split_qualified_name(qualified_name).ok_or_else(|| McpError::NotMcpTool {
                name: qualified_name.to_string(),
            })?;
        let client = self.client(server).await?;
        let result = client.call(tool, arguments).await;
        if let Err(e) = &result {
            self.forget_if_broken(&client, e).await;
        }
        result
    }

    /// Drops a connection that broke, so the next use connects again. The request that
    /// found it broken is not retried: a tool call may have had its effect already.
    async fn forget_if_broken(&self, client: &Arc<McpClient>, error: &McpError) {
        if !error.breaks_connection() {
            return;
        }
        if let Some(slot) = self.servers.get(client.server()) {
            let mut current = slot.client.lock().await;
            // Another request may already have replaced it with a working connection.
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
                *current = None;
            }
        }
    }
}
