//! The Model Context Protocol ingress: `POST /mcp` speaks MCP's Streamable
//! HTTP transport (revision 2025-06-18, and 2025-11-25 clients), answering
//! each JSON-RPC request with one JSON reply.
//!
//! `tools/list` offers the methods of the routes with `mcp = true`;
//! `tools/call` turns the arguments into the request message and sends it
//! down the same pipeline as every other protocol, through the shared edge:
//! the HTTP request's headers are the call's headers (a bearer token
//! authenticates), limits and the cache apply, and the call is counted,
//! traced and logged as `mcp`. A failed call is a tool result with
//! `isError` and the google.rpc.Status in its `_meta`.
//!
//! The server is stateless: no session id, no server-to-client stream
//! (`GET /mcp` is 405, as the transport allows).

pub mod tools;

use super::body::ResponseBody;
use super::edge::Edge;
use crate::config::Limits;
use crate::envelope::{Payload, ReplyFrame};
use crate::error::GatewayError;
use crate::observe::call_record::ClientProtocol;
use crate::policy::Pipeline;
use crate::transcode::response::{self, HttpReplyBody};
use crate::transcode::status::StatusRenderer;
use crate::transcode::{json as json_options, request};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, ORIGIN};
use http::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tools::{Tool, ToolTable, MAX_STREAM_MESSAGES};
use tower::ServiceExt;

/// Where the endpoint is served.
pub const PATH: &str = "/mcp";

/// Whether a config serves `/mcp`: a route has `mcp = true` and at least
/// one of its methods can be a tool. Then `/mcp` answers before the route
/// table, whatever the method.
pub fn served(config: &crate::config::Config, routes: &crate::routes::RouteTable) -> bool {
    let mcp: Vec<bool> = config.routes.iter().map(|r| r.mcp).collect();
    mcp.contains(&true) && !ToolTable::build(routes, &mcp).is_empty()
}

/// Revisions this server speaks, newest first; a client asking for another
/// is offered the newest.
const PROTOCOL_VERSIONS: [&str; 2] = ["2025-11-25", "2025-06-18"];

/// JSON-RPC error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Replies of a streamed tool result kept in total, at most.
const MAX_STREAM_BYTES: usize = 4 << 20;

pub struct McpIngress {
    pub tools: Arc<ToolTable>,
    /// For each tool's route, its cross-origin policy.
    pub routes: Arc<crate::routes::RouteTable>,
    pub pipeline: Pipeline,
    pub edge: Edge,
    pub limits: Limits,
    pub status: StatusRenderer,
}

/// A tool call that failed, with the replies a server stream delivered
/// before it did.
struct Failed {
    error: GatewayError,
    delivered: Vec<Value>,
}

impl From<GatewayError> for Failed {
    fn from(error: GatewayError) -> Failed {
        Failed {
            error,
            delivered: Vec::new(),
        }
    }
}

/// A request answered with a JSON-RPC error instead of a result.
struct Refusal {
    status: StatusCode,
    code: i64,
    id: RpcId,
    error: GatewayError,
}

impl Refusal {
    fn new(status: StatusCode, code: i64, error: GatewayError) -> Refusal {
        Refusal {
            status,
            code,
            id: null_id(),
            error,
        }
    }

    /// The refusal answered with the request's id, when it has one.
    fn with_id(self, id: Option<&RpcId>) -> Refusal {
        match id {
            Some(id) => Refusal {
                id: id.clone(),
                ..self
            },
            None => self,
        }
    }
}

/// A request's id exactly as the client wrote it: JSON-RPC answers with
/// the same value, and a number read into a `Value` could come back
/// spelled otherwise (`1e3` as `1000.0`).
type RpcId = Box<serde_json::value::RawValue>;

fn null_id() -> RpcId {
    serde_json::value::RawValue::from_string("null".to_owned()).expect("null is JSON")
}

/// The id of a message, read apart from the rest.
#[derive(serde::Deserialize)]
struct IdOf {
    id: Option<RpcId>,
}

/// A `tools/call` whose `arguments` are JSON that a `Value` cannot hold (a
/// number past a double's range, nesting past the JSON reader's depth),
/// read with its arguments left as written: they are the method's request,
/// judged by the transcoder as a REST body is (a tool error, code 3), not
/// a body that is not JSON.
#[derive(serde::Deserialize)]
struct RawToolCall {
    jsonrpc: Value,
    id: Value,
    method: String,
    params: RawToolParams,
}

#[derive(serde::Deserialize)]
struct RawToolParams {
    name: Value,
    arguments: Box<serde_json::value::RawValue>,
}

/// A tool call's `arguments`: read as a `Value`, or, when a `Value` cannot
/// hold them, as written ([`RawToolCall`]).
enum Arguments {
    Parsed(Value),
    Raw(Box<serde_json::value::RawValue>),
}

impl RawToolCall {
    /// The message with empty arguments, and the arguments as written.
    fn split(self) -> (Value, Box<serde_json::value::RawValue>) {
        let message = json!({
            "jsonrpc": self.jsonrpc,
            "id": self.id,
            "method": self.method,
            "params": { "name": self.params.name, "arguments": {} },
        });
        (message, self.params.arguments)
    }
}

/// A body the JSON-RPC reader could not take, said as what it is: JSON
/// text it does not hold (a number past a double's range, nesting past
/// the reader's depth) is a request it cannot run, answered with the id as
/// written; a byte order mark or malformed text is not JSON, said as the
/// transcoder says it for a message's body.
fn unreadable_body(bytes: &[u8], e: &serde_json::Error) -> Refusal {
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            PARSE_ERROR,
            invalid("the body starts with a byte order mark (EF BB BF), which JSON text may not: send it without one"),
        );
    }
    if let Some(why) = crate::transcode::json::unheld(e) {
        // A string or a number, as any answer's id is; another is none.
        let id = serde_json::from_slice::<IdOf>(bytes)
            .ok()
            .and_then(|m| m.id)
            .filter(|id| matches!(id.get().as_bytes()[0], b'"' | b'-' | b'0'..=b'9'));
        return Refusal::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            invalid(format!("the body is JSON the gateway does not read: {why}")),
        )
        .with_id(id.as_ref());
    }
    Refusal::new(
        StatusCode::BAD_REQUEST,
        PARSE_ERROR,
        invalid(format!(
            "the body is not JSON: {}",
            crate::transcode::json::parser_words(e)
        )),
    )
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::new(
        crate::error::ErrorKind::InvalidRequest {
            violations: Vec::new(),
        },
        crate::error::Origin::Client,
        message,
    )
}

impl McpIngress {
    /// A request to `/mcp` the connection's edge refused before this
    /// adapter read it (a compressed body, a malformed head), as a JSON-RPC
    /// error with the refusal's HTTP status, like every refusal here.
    pub fn refusal(&self, err: &GatewayError) -> Response<ResponseBody> {
        let mut resp =
            rpc_error_response(err.http_status(), &null_id(), INVALID_REQUEST, &err.message);
        add_error_headers(&mut resp, err);
        resp
    }

    /// Serves one HTTP request to `/mcp`: one JSON-RPC message. Every
    /// request has its access-log record, whatever becomes of it, and the
    /// CORS headers its origin is allowed.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
    ) -> Response<ResponseBody> {
        let started = std::time::Instant::now();
        let record = self.edge.record(
            ClientProtocol::Mcp,
            req.method(),
            PATH,
            req.headers(),
            client,
        );
        // The CORS policy the request's origin gets, looked up once: for
        // the origin check and for the reply's headers. Two different
        // origins get none (the request is refused for them).
        let origin = match crate::headers::check_one_value(req.headers(), ORIGIN) {
            Ok(()) => req
                .headers()
                .get(ORIGIN)
                .map(|o| o.to_str().unwrap_or("?").to_owned()),
            Err(_) => None,
        };
        let cors = origin
            .as_deref()
            .and_then(|o| Some((o.to_owned(), self.cors_policy(o)?)));
        let allowed = cors.is_some();
        let mut resp = match self.exchange(req, client, started, &record, allowed).await {
            Ok(resp) => resp,
            Err(refusal) => {
                // The line every protocol's refusal gets (protocol, code,
                // status, origin, the request id).
                failed(&record, PATH, started, refusal.status, &refusal.error);
                let mut resp = rpc_error_response(
                    refusal.status,
                    &refusal.id,
                    refusal.code,
                    &refusal.error.message,
                );
                if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
                    resp.headers_mut()
                        .insert(ALLOW, HeaderValue::from_static("POST"));
                }
                add_error_headers(&mut resp, &refusal.error);
                resp
            }
        };
        record.http_status(resp.status());
        if let Some((origin, policy)) = &cors {
            super::cors::decorate(policy, origin, resp.headers_mut());
        }
        resp
    }

    async fn exchange(
        &self,
        req: Request<super::request_body::RequestBody>,
        client: Option<SocketAddr>,
        started: std::time::Instant,
        record: &Arc<crate::observe::call_record::CallRecord>,
        cors_allows_origin: bool,
    ) -> Result<Response<ResponseBody>, Refusal> {
        if req.method() != Method::POST {
            // Another site's page is refused for its origin first, as it
            // would be by POST: it is not told which methods it may use.
            let foreign = req
                .headers()
                .get(ORIGIN)
                .map(|o| o.to_str().unwrap_or("?"))
                .filter(|o| !same_origin(o, req.headers(), req.uri()) && !cors_allows_origin);
            return Err(match foreign {
                Some(origin) => Refusal::new(
                    StatusCode::FORBIDDEN,
                    INVALID_REQUEST,
                    origin_not_accepted(origin),
                ),
                None => Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    INVALID_REQUEST,
                    GatewayError::method_not_allowed(req.method(), PATH, vec![Method::POST]),
                ),
            });
        }
        // A page from another site may not drive the tools from a user's
        // browser, unless a tool route's CORS policy lets its origin in
        // (each call checks its own route's).
        // Refused for its headers, but answered after the body is read, so
        // the answer carries the request's id when it has one.
        let mut refused = None;
        // Two different origins are refused as two content types are, the
        // answer carrying the request's id (the edge leaves this check on
        // `POST /mcp` to the endpoint).
        if let Err(e) = crate::headers::check_one_value(req.headers(), ORIGIN) {
            refused = Some(Refusal::new(e.http_status(), INVALID_REQUEST, e));
        }
        if let Some(origin) = req.headers().get(ORIGIN).filter(|_| refused.is_none()) {
            let origin = origin.to_str().unwrap_or("?");
            if !same_origin(origin, req.headers(), req.uri()) && !cors_allows_origin {
                refused = Some(Refusal::new(
                    StatusCode::FORBIDDEN,
                    INVALID_REQUEST,
                    origin_not_accepted(origin),
                ));
            }
        }
        if let Some(v) = req.headers().get("mcp-protocol-version") {
            let known = v
                .to_str()
                .is_ok_and(|v| PROTOCOL_VERSIONS.contains(&v.trim()));
            if !known && refused.is_none() {
                refused = Some(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    invalid(format!(
                        "unsupported MCP-Protocol-Version {v:?}; supported: {}",
                        PROTOCOL_VERSIONS.join(", ")
                    )),
                ));
            }
        }
        if refused.is_none() {
            if let Err(e) = crate::headers::check_values(req.headers()) {
                refused = Some(Refusal::new(e.http_status(), INVALID_REQUEST, e));
            }
        }
        let (parts, body) = req.into_parts();
        let bytes = super::framed::read_limited(
            body,
            self.limits.max_request_body_bytes,
            crate::config::REQUEST_BODY_LIMIT,
            self.limits.body_read_timeout,
            None,
        )
        .await
        .map_err(|e| {
            refused
                .take()
                .unwrap_or(Refusal::new(e.http_status(), INVALID_REQUEST, e))
        })?;
        let mut raw_arguments = None;
        let message: Value = match serde_json::from_slice(&bytes) {
            Ok(message) => message,
            Err(e) => match serde_json::from_slice::<RawToolCall>(&bytes) {
                Ok(call) if call.method == "tools/call" => {
                    let (message, arguments) = call.split();
                    raw_arguments = Some(arguments);
                    message
                }
                _ => return Err(refused.unwrap_or_else(|| unreadable_body(&bytes, &e))),
            },
        };
        let raw_id = message
            .get("id")
            .filter(|i| i.is_string() || i.is_number())
            .map(|id| {
                // As written when the body says it once; a body that gives
                // it twice is answered with the value read (the last).
                serde_json::from_slice::<IdOf>(&bytes)
                    .ok()
                    .and_then(|m| m.id)
                    .or_else(|| serde_json::value::to_raw_value(id).ok())
                    .unwrap_or_else(null_id)
            });
        if let Some(refusal) = refused {
            // Refused for a header, but logged and traced as what it asked
            // for: the tool's method, or the JSON-RPC method.
            let method = message.get("method").and_then(Value::as_str);
            let tool = message
                .pointer("/params/name")
                .and_then(Value::as_str)
                .and_then(|name| self.tools.get(name));
            match (method, tool) {
                (Some("tools/call"), Some(tool)) => {
                    record.routed(&tool.binding.target);
                    record.route(|| format!("tool {}", tool.name));
                }
                (Some(method), _) => record.route(|| format!("mcp {method}")),
                _ => {}
            }
            return Err(refusal.with_id(raw_id.as_ref()));
        }
        let Some(object) = message.as_object() else {
            let why = if message.is_array() {
                "expected one JSON-RPC message (an object); batches are not part of MCP since 2025-06-18".to_owned()
            } else {
                format!(
                    "expected one JSON-RPC message (an object), got {}",
                    match message {
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        Value::Bool(_) => "a boolean",
                        _ => "null",
                    }
                )
            };
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                invalid(why),
            ));
        };
        // JSON-RPC 2.0 as MCP restricts it: the version said, and an id
        // that is a string or a number (MCP forbids null).
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            let refusal = Refusal::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                invalid("a JSON-RPC message needs \"jsonrpc\": \"2.0\""),
            );
            return Err(refusal.with_id(raw_id.as_ref()));
        }
        if let Some(bad) = object
            .get("id")
            .filter(|i| !(i.is_string() || i.is_number()))
        {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                invalid(format!("a JSON-RPC id is a string or a number, not {bad}")),
            ));
        }
        let id = raw_id;
        // A request or a response, never both (JSON-RPC 2.0 section 4 and
        // 5): such a message is not run as the request it may also be.
        if object.contains_key("method")
            && (object.contains_key("result") || object.contains_key("error"))
        {
            let refusal = Refusal::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                invalid("a JSON-RPC message is a request (\"method\") or a response (\"result\" or \"error\"), not both"),
            );
            return Err(refusal.with_id(id.as_ref()));
        }
        let Some(method) = object.get("method").and_then(Value::as_str) else {
            // A response to a request this server never sends, or garbage.
            return match id {
                Some(_) if object.contains_key("result") || object.contains_key("error") => {
                    record.route(|| "mcp response".to_owned());
                    Ok(accepted())
                }
                _ => {
                    let refusal = Refusal::new(
                        StatusCode::BAD_REQUEST,
                        INVALID_REQUEST,
                        invalid("a JSON-RPC request needs a \"method\""),
                    );
                    Err(refusal.with_id(id.as_ref()))
                }
            };
        };
        let Some(id) = id else {
            // Notifications (initialized, cancelled...) need no answer.
            record.route(|| format!("mcp {method}"));
            return Ok(accepted());
        };
        // MCP's requests take their parameters by name: an object, or none
        // (`null`, which JSON-RPC does not allow but some clients send for
        // methods without parameters, is read as none).
        let params = object.get("params").cloned().unwrap_or(Value::Null);
        let bad_params = !(params.is_object() || params.is_null());
        let outcome = match method {
            // MCP's requests take their parameters by name.
            _ if bad_params => Err((
                INVALID_PARAMS,
                format!("\"params\" of {method} must be an object, not {params}"),
            )),
            "initialize"
                if params
                    .get("protocolVersion")
                    .is_some_and(|v| !v.is_string()) =>
            {
                Err((
                    INVALID_PARAMS,
                    "\"protocolVersion\" must be a string such as \"2025-11-25\"".to_owned(),
                ))
            }
            "initialize" => Ok(self.initialize(&params)),
            "ping" => Ok(json!({})),
            "tools/list" => Ok(json!({ "tools": self.tools.listing() })),
            "tools/call" => {
                self.call(&params, raw_arguments, &parts, client, started, record)
                    .await
            }
            other => Err((
                METHOD_NOT_FOUND,
                format!(
                    "method {other:?} is not offered (initialize, ping, tools/list, tools/call)"
                ),
            )),
        };
        // A tool call records its own route and outcome, unless it never
        // got to name its tool.
        let recorded_by_call = method == "tools/call" && !bad_params;
        if !recorded_by_call {
            record.route(|| format!("mcp {method}"));
        }
        let body = match outcome {
            Ok(result) => Answer {
                jsonrpc: "2.0",
                id: &id,
                result: Some(result),
                error: None,
            },
            Err((code, message)) => {
                if !recorded_by_call {
                    // An unknown JSON-RPC method is logged as the
                    // UNIMPLEMENTED it is; bad params as INVALID_ARGUMENT.
                    let err = if code == METHOD_NOT_FOUND {
                        GatewayError::new(
                            crate::error::ErrorKind::UnknownMethod {
                                path: format!("mcp {method}"),
                            },
                            crate::error::Origin::Client,
                            message.clone(),
                        )
                    } else {
                        invalid(message.clone())
                    };
                    failed(
                        record,
                        &format!("mcp {method}"),
                        started,
                        StatusCode::OK,
                        &err,
                    );
                }
                Answer {
                    jsonrpc: "2.0",
                    id: &id,
                    result: None,
                    error: Some(json!({ "code": code, "message": message })),
                }
            }
        };
        Ok(json_response(StatusCode::OK, &body))
    }

    /// The CORS policy `/mcp` answers `origin` with: one endpoint serves
    /// every tool route, so the policies of those that let `origin` in
    /// together, as [`CorsPolicy::merged`] joins them; `None` when none
    /// does. Each call is still held to its own route's origins.
    pub fn cors_policy(&self, origin: &str) -> Option<Arc<crate::config::CorsPolicy>> {
        let mut allowing = self
            .tools
            .routes()
            .filter_map(|r| self.routes.route_cors(r))
            .filter(|p| p.allows_origin(origin));
        let first = allowing.next()?;
        let rest: Vec<&Arc<crate::config::CorsPolicy>> = allowing.collect();
        if rest.is_empty() {
            return Some(first.clone());
        }
        Some(Arc::new(first.merged(rest.into_iter().map(|p| &**p))))
    }

    fn initialize(&self, params: &Value) -> Value {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let version = PROTOCOL_VERSIONS
            .iter()
            .find(|v| **v == asked)
            .unwrap_or(&PROTOCOL_VERSIONS[0]);
        json!({
            "protocolVersion": version,
            "capabilities": { "tools": { "listChanged": false } },
            "serverInfo": { "name": "portico", "version": env!("CARGO_PKG_VERSION") },
            "instructions": "Each tool calls one gRPC method behind this gateway; its arguments are the method's request message in JSON.",
        })
    }

    /// `tools/call`: a JSON-RPC error only when the tool does not exist;
    /// everything that goes wrong with the call is a tool error result.
    async fn call(
        &self,
        params: &Value,
        raw_arguments: Option<Box<serde_json::value::RawValue>>,
        parts: &http::request::Parts,
        client: Option<SocketAddr>,
        started: std::time::Instant,
        record: &Arc<crate::observe::call_record::CallRecord>,
    ) -> Result<Value, (i64, String)> {
        let origin = parts.headers.get(ORIGIN).and_then(|o| o.to_str().ok());
        // Before a tool is found, the call is logged as the method it is.
        let refuse_before_tool = |message: String| {
            let err = invalid(message.clone());
            record.route(|| "mcp tools/call".to_owned());
            failed(record, "mcp tools/call", started, StatusCode::OK, &err);
            Err((INVALID_PARAMS, message))
        };
        let Some(name) = params.get("name").and_then(Value::as_str) else {
            return refuse_before_tool("tools/call needs a \"name\"".to_owned());
        };
        let Some(tool) = self.tools.get(name) else {
            return refuse_before_tool(format!("no tool named {name:?}"));
        };
        record.routed(&tool.binding.target);
        record.route(|| format!("tool {}", tool.name));
        let arguments = match raw_arguments {
            Some(raw) => Arguments::Raw(raw),
            None => Arguments::Parsed(params.get("arguments").cloned().unwrap_or(json!({}))),
        };
        let outcome = match self.cross_origin(tool, origin, parts) {
            Err(err) => Err(err.into()),
            Ok(()) => {
                self.run(tool, arguments, parts, client, started, record)
                    .await
            }
        };
        match outcome {
            Ok(result) => {
                record.succeeded_finally();
                Ok(result)
            }
            Err(Failed { error, delivered }) => {
                // A tool's failure is a result in a 200, as MCP has it.
                failed(record, &tool.name, started, StatusCode::OK, &error);
                let mut result = self.tool_error(&error);
                // A stream that failed part way: what arrived is not lost,
                // as REST, Connect and gRPC-Web deliver it before the error.
                if !delivered.is_empty() {
                    if let Some(content) = result["content"].as_array_mut() {
                        let messages = json!({ "messages": delivered });
                        content.push(json!({ "type": "text", "text": messages.to_string() }));
                    }
                }
                Ok(result)
            }
        }
    }

    /// A call from another origin passes only if its own route's CORS
    /// policy lets that origin in (another tool route's does not).
    fn cross_origin(
        &self,
        tool: &Tool,
        origin: Option<&str>,
        parts: &http::request::Parts,
    ) -> Result<(), GatewayError> {
        let Some(origin) = origin else {
            return Ok(());
        };
        if same_origin(origin, &parts.headers, &parts.uri)
            || self
                .routes
                .route_cors(tool.binding.target.route)
                .is_some_and(|p| p.allows_origin(origin))
        {
            return Ok(());
        }
        Err(GatewayError::new(
            crate::error::ErrorKind::OriginNotAllowed {
                origin: origin.to_owned(),
            },
            crate::error::Origin::Client,
            format!(
                "{origin} may not call {} (its route's CORS policy)",
                tool.name
            ),
        ))
    }

    async fn run(
        &self,
        tool: &Tool,
        arguments: Arguments,
        parts: &http::request::Parts,
        client: Option<SocketAddr>,
        started: std::time::Instant,
        record: &Arc<crate::observe::call_record::CallRecord>,
    ) -> Result<Value, Failed> {
        // The body was read before its tool, and so its deadline, was
        // known: a deadline it already passed was the client's doing, said
        // as REST says it of a body that arrived too late.
        let target = tool.binding.target.clone();
        let window = target.timeout.unwrap_or(self.limits.request_timeout);
        let deadline = self
            .edge
            .client_timeout(&parts.headers)
            .map_or(window, |c| c.min(window));
        if started.elapsed() >= deadline {
            return Err(GatewayError::deadline_passed_reading_request().into());
        }
        let is_object = match &arguments {
            Arguments::Raw(raw) => raw.get().starts_with('{'),
            Arguments::Parsed(value) => value.is_object(),
        };
        if !is_object {
            return Err(GatewayError::invalid_field(
                "arguments",
                "must be a JSON object: the method's request message",
            )
            .into());
        }
        let body = match &arguments {
            Arguments::Raw(raw) => Bytes::copy_from_slice(raw.get().as_bytes()),
            Arguments::Parsed(value) => Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        };
        let mut message = request::build(&tool.binding, None, &body, Some("application/json"))
            .map_err(crate::transcode::json::without_position)?;
        // A method bound to PATCH updates what the arguments name, as REST
        // does: its `update_mask`, when not given, is the keys sent.
        if let Some(patch) = &tool.patch {
            // Arguments a JSON value cannot hold never get this far: the
            // transcoder refuses them as it refuses such a REST body.
            let Arguments::Parsed(keys) = &arguments else {
                return Err(GatewayError::internal(
                    "tool arguments read as written cannot name the fields to update",
                )
                .into());
            };
            message = request::fill_update_mask(message, keys, patch)?;
        }
        let mut inbound = self.edge.inbound(&parts.headers, &parts.extensions);
        inbound.record = Some(record.clone());
        // An API key in the endpoint's URL (`/mcp?api_key=...`), as on REST;
        // the rest of the query means nothing to MCP.
        let _ = self.edge.lift_query(&mut inbound, parts.uri.query());
        let envelope = self.edge.envelope(
            inbound,
            target.clone(),
            Payload::Unary(message),
            client,
            started,
        );
        // A tool result is one answer: a stream is read for at most the
        // route's timeout from the request's arrival (the wait for its
        // first reply included), then cut, with what arrived.
        let until = tokio::time::Instant::from_std(started) + window;
        let reply = if target.kind.server_streams() {
            match tokio::time::timeout_at(until, self.pipeline.clone().oneshot(envelope)).await {
                Ok(reply) => reply?,
                // Nothing came in time: the call failed, as a unary call
                // whose backend is silent fails, not an empty success (and
                // as its deadline is, the gateway's to have enforced).
                Err(_) => {
                    return Err(GatewayError::new(
                        crate::error::ErrorKind::DeadlineExceeded,
                        crate::error::Origin::Gateway,
                        format!(
                            "the stream sent no reply within the route's timeout ({})",
                            humantime::format_duration(window)
                        ),
                    )
                    .into())
                }
            }
        } else {
            self.pipeline.clone().oneshot(envelope).await?
        };
        if target.kind.server_streams() {
            let headers = reply_metadata(&reply.metadata);
            let output = target.method.output();
            let options =
                json_options::output(&tool.binding.json, tool.binding.target.reply_json_direct);
            let mut messages = Vec::new();
            let mut size = 0;
            let mut truncated = false;
            let mut frames = reply.body;
            loop {
                let frame = match tokio::time::timeout_at(until, frames.next()).await {
                    Err(_) => {
                        truncated = true;
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Ok(frame))) => frame,
                    Ok(Some(Err(error))) => {
                        return Err(Failed {
                            error,
                            delivered: messages,
                        })
                    }
                };
                let ReplyFrame::Message(bytes) = frame else {
                    continue;
                };
                if messages.len() == MAX_STREAM_MESSAGES {
                    // Dropping the stream cancels the call.
                    truncated = true;
                    break;
                }
                let json = match response::message_json(&output, &bytes, &options) {
                    Ok(json) => json,
                    Err(error) => {
                        return Err(Failed {
                            error,
                            delivered: messages,
                        })
                    }
                };
                size += json.len();
                if size > MAX_STREAM_BYTES {
                    truncated = true;
                    break;
                }
                messages.push(serde_json::from_slice::<Value>(&json).unwrap_or(Value::Null));
            }
            if truncated {
                record.answered_early();
            }
            let structured = json!({ "messages": messages, "truncated": truncated });
            return Ok(with_metadata(structured_result(structured), headers));
        }
        let (metadata, bytes) = reply.into_unary().await?;
        // Headers and trailers, as REST clients get them.
        let headers = reply_metadata(&metadata);
        let result = match response::unary(&tool.binding, &bytes)? {
            HttpReplyBody::Json(json) => {
                let value: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
                if value.is_object() {
                    structured_result(value)
                } else {
                    json!({ "content": [{ "type": "text", "text": value.to_string() }] })
                }
            }
            HttpReplyBody::Raw { content_type, data } => raw_result(&content_type, &data),
        };
        Ok(with_metadata(result, headers))
    }

    /// A failed call: `isError`, the status as text and under `_meta`
    /// (not as structured content, which clients check against the
    /// tool's output schema), with the headers a REST client would get
    /// (`Retry-After`, `WWW-Authenticate`...).
    fn tool_error(&self, err: &GatewayError) -> Value {
        let status = self.status.to_json(err);
        let mut meta = serde_json::Map::new();
        meta.insert(STATUS_KEY.to_owned(), status);
        // What a REST client gets as headers: the backend's error metadata,
        // under the gateway's own.
        let mut all = http::HeaderMap::new();
        if let crate::error::ErrorKind::Backend(b) = &err.kind {
            super::edge::copy_reply_metadata(&b.metadata, &mut all, "");
        }
        for (name, value) in err.http_headers() {
            all.insert(name, value);
        }
        let headers = reply_metadata(&all);
        if let Some(headers) = headers {
            meta.insert(METADATA_KEY.to_owned(), headers);
        }
        json!({
            "isError": true,
            "content": [{ "type": "text", "text": format!("{:?}: {}", err.grpc_code(), err.message) }],
            "_meta": meta,
        })
    }
}

/// The `_meta` key of a failed call's google.rpc.Status.
pub const STATUS_KEY: &str = "io.portico/status";

/// The `_meta` key of the reply metadata a tool result carries.
pub const METADATA_KEY: &str = "io.portico/metadata";

/// A page of another site that no tool route's policy lets in.
fn origin_not_accepted(origin: &str) -> GatewayError {
    GatewayError::new(
        crate::error::ErrorKind::OriginNotAllowed {
            origin: origin.to_owned(),
        },
        crate::error::Origin::Client,
        format!("requests from {origin} are not accepted at /mcp"),
    )
}

/// The backend's reply metadata that any client may see (what REST clients
/// get as headers: `x-cache`, the backend's own), as a JSON object.
fn reply_metadata(metadata: &http::HeaderMap) -> Option<Value> {
    let mut out = serde_json::Map::new();
    for (name, value) in metadata {
        // A backend's `x-request-id` is not the request's: the reply's own
        // header carries that, as every protocol's does.
        if super::edge::reaches_client(name)
            && !name.as_str().ends_with("-bin")
            && *name != super::edge::request_id::HEADER
        {
            if let Ok(v) = value.to_str() {
                super::edge::add_json_metadata(&mut out, name, v);
            }
        }
    }
    (!out.is_empty()).then_some(Value::Object(out))
}

fn with_metadata(mut result: Value, metadata: Option<Value>) -> Value {
    if let Some(m) = metadata {
        result["_meta"] = json!({ METADATA_KEY: m });
    }
    result
}

/// A reply as structured content, and as text for clients that read only that.
fn structured_result(value: Value) -> Value {
    json!({
        "content": [{ "type": "text", "text": value.to_string() }],
        "structuredContent": value,
    })
}

/// A google.api.HttpBody reply: text as text, images as images, anything
/// else as an embedded binary resource.
fn raw_result(content_type: &str, data: &[u8]) -> Value {
    let mime = if content_type.is_empty() {
        "application/octet-stream"
    } else {
        content_type
    };
    let base = mime.split(';').next().unwrap_or_default().trim();
    let lower = base.to_ascii_lowercase();
    // JSON and XML by any name (`application/problem+json`, RFC 6839's
    // suffixes) are text, as `text/*` is.
    let xml = lower == "application/xml" || lower.ends_with("+xml");
    // XML may declare another encoding in its prolog: only UTF-8 is text,
    // other bytes stay bytes.
    let textual = !lower.starts_with("image/")
        && (lower.starts_with("text/")
            || lower == "application/json"
            || lower.ends_with("+json")
            || xml && std::str::from_utf8(data).is_ok());
    if textual {
        return json!({ "content": [{ "type": "text", "text": String::from_utf8_lossy(data) }] });
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    if lower.starts_with("image/") {
        return json!({ "content": [{ "type": "image", "data": encoded, "mimeType": base }] });
    }
    json!({ "content": [{ "type": "resource", "resource": {
        "uri": "portico:reply", "mimeType": base, "blob": encoded
    } }] })
}

/// Whether `Origin` is the gateway's own ([`super::cors::is_own_origin`]).
fn same_origin(origin: &str, headers: &http::HeaderMap, uri: &http::Uri) -> bool {
    super::cors::is_own_origin(origin, headers, uri.authority().map(|a| a.as_str()))
}

fn accepted() -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp
}

/// A JSON-RPC answer, its id written back as the client spelled it.
#[derive(serde::Serialize)]
struct Answer<'a> {
    jsonrpc: &'static str,
    id: &'a serde_json::value::RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(
        serde_json::to_vec(body).unwrap_or_default(),
    ));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn rpc_error_response(
    status: StatusCode,
    id: &serde_json::value::RawValue,
    code: i64,
    message: &str,
) -> Response<ResponseBody> {
    json_response(
        status,
        &Answer {
            jsonrpc: "2.0",
            id,
            result: None,
            error: Some(json!({ "code": code, "message": message })),
        },
    )
}

/// A failed MCP request: the diagnostic line every protocol's failures
/// get (protocol, path, status, code, origin, request id), and its
/// access-log record's outcome.
fn failed(
    record: &crate::observe::call_record::CallRecord,
    path: &str,
    started: std::time::Instant,
    status: StatusCode,
    err: &GatewayError,
) {
    crate::observe::request_failed(ClientProtocol::Mcp, path, started, status, err);
    record.failed_finally(err);
}

/// The headers every protocol's refusal of this kind carries (the
/// encodings a compressed body should have used, say).
fn add_error_headers(resp: &mut Response<ResponseBody>, err: &GatewayError) {
    for (name, value) in err.http_headers() {
        resp.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_reply_is_text_for_text_json_and_xml_an_image_or_else_a_blob() {
        for (content_type, kind) in [
            ("text/csv", "text"),
            ("application/json", "text"),
            ("application/problem+json; charset=utf-8", "text"),
            ("application/atom+xml", "text"),
            ("image/png", "image"),
            ("IMAGE/PNG", "image"),
            ("image/svg+xml", "image"),
            ("application/pdf", "resource"),
            ("", "resource"),
        ] {
            let result = raw_result(content_type, b"{}");
            assert_eq!(result["content"][0]["type"], kind, "{content_type}");
        }
        // XML in another encoding than UTF-8 stays bytes.
        let latin1 = raw_result("application/xml", b"<a>\xe9</a>");
        assert_eq!(latin1["content"][0]["type"], "resource");
    }

    #[test]
    fn a_repeated_reply_header_is_one_entry_with_its_values_joined() {
        let mut metadata = http::HeaderMap::new();
        metadata.append("x-trail", "t1".parse().unwrap());
        metadata.append("x-trail", "t2".parse().unwrap());
        metadata.append("x-one", "1".parse().unwrap());
        metadata.append("x-raw-bin", "AQI".parse().unwrap());
        metadata.append("x-request-id", "the-backends".parse().unwrap());
        assert_eq!(
            reply_metadata(&metadata),
            Some(json!({"x-trail": "t1, t2", "x-one": "1"}))
        );
    }
}
