//! The request edge: the one place where a client's request headers,
//! whatever protocol carried them, become what the pipeline sees and what
//! the backend receives, and where a reply's metadata becomes the client's
//! headers. Every adapter (REST, gRPC, gRPC-Web, Connect, WebSocket) calls
//! it; none keeps a header rule of its own.
//!
//! Three views of one request:
//! - **the policy view** ([`RequestCtx::headers`]): every header the client
//!   sent, plus credentials lifted from the query string or a WebSocket
//!   subprotocol entry. Authentication reads tokens, keys and cookies here,
//!   the cache reads `cache-control` and its `Vary` headers, rate limits
//!   their key header, so a policy sees the same thing on every protocol;
//! - **the backend's metadata** ([`Envelope::metadata`]): the headers the
//!   one forwarding rule ([`MetadataConfig::allows`]) lets through, never
//!   the gateway's own ([`is_framing`]), a protocol's own (`connect-*`,
//!   `sec-websocket-*`, `mcp-*`), nor a client's copy of a header the
//!   authenticators write ([`MetadataConfig::gateway_owned`]);
//! - **the deadline**: `grpc-timeout` or `connect-timeout-ms`, whichever
//!   protocol sent it, shortening (never lengthening) the route's timeout.
//!
//! It does not match routes, decode messages or render errors: errors have
//! their one table in [`crate::error`].

pub mod config;
pub mod forwarded;
pub mod framing;
pub mod path;
pub mod request_id;

use crate::config::MetadataConfig;
use crate::envelope::{ClientCertificate, Envelope, Payload, RequestCtx, Target};
use crate::headers::{deadline, is_framing, is_protocol_own, parse_grpc_timeout};
use crate::observe::call_record::{CallRecord, ClientProtocol, Sinks};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `Sec-WebSocket-Protocol` entry carrying a bearer token (browsers
/// cannot set headers on a WebSocket): `portico.token.<base64url token>`.
pub const TOKEN_PREFIX: &str = "portico.token.";

/// The edge's settings: the forwarding rule, client deadlines, and where
/// credentials may come from besides headers.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub metadata: MetadataConfig,
    /// A query parameter of a WebSocket handshake that carries a bearer token.
    pub token_query_param: Option<String>,
    /// Peers whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: Vec<forwarded::Cidr>,
    /// Where calls' access-log lines and spans go.
    pub sinks: Sinks,
}

/// Removes every header whose name holds `_`, as nginx does by default:
/// CGI, WSGI, PHP and Rack read `x_user_id` and `x-user-id` as one name,
/// so a client could pass such a backend a header the gateway strips or
/// sets (a forwarded claim, `X-Forwarded-For`, a method override, an API
/// key the cache does not see) by spelling it with `_`.
fn drop_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|n| n.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        tracing::debug!(header = %name, "dropped: a header name holding `_` (metadata.headers_with_underscores)");
        let fields = headers.get_all(&name).iter().count() as u64;
        UNDERSCORED_DROPPED.fetch_add(fields, std::sync::atomic::Ordering::Relaxed);
        headers.remove(&name);
    }
}

/// Header fields dropped for a name holding `_`, since start
/// (`portico_dropped_headers_with_underscores_total`): how an operator
/// learns whether some client relies on such names before choosing
/// `"allow"`.
pub static UNDERSCORED_DROPPED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The mark the listener puts in the extensions of each request that came
/// over a TLS connection.
#[derive(Clone, Copy, Debug)]
pub struct OverTls;

/// What the edge made of one request's headers.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    /// The policy view: every client header plus lifted credentials.
    pub headers: HeaderMap,
    /// The certificate the client's TLS connection presented (mutual TLS).
    pub client_cert: Option<Arc<ClientCertificate>>,
    /// Whether the request came over TLS: its own connection's scheme, not
    /// the config's, which a reload may have changed since it was opened.
    pub over_tls: bool,
    /// The call's access-log record, from the adapter that read it.
    pub record: Option<Arc<CallRecord>>,
}

impl Edge {
    pub fn new(metadata: MetadataConfig, token_query_param: Option<String>) -> Edge {
        Edge {
            metadata,
            token_query_param,
            trusted_proxies: Vec::new(),
            sinks: Sinks::default(),
        }
    }

    /// As it is, with calls' lines and spans going to `sinks`.
    pub fn with_sinks(mut self, sinks: Sinks) -> Edge {
        self.sinks = sinks;
        self
    }

    /// A WebSocket session's access-log record, from its handshake.
    pub fn session_record(
        &self,
        method: &http::Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Arc<CallRecord> {
        if self.sinks.any() {
            CallRecord::session(&self.sinks, method, path, headers)
        } else {
            CallRecord::none()
        }
    }

    /// A new call's access-log record, from what its adapter read first.
    /// The client is known from the start, so a call refused before any
    /// route (no route, a bad body) is logged with it too.
    pub fn record(
        &self,
        protocol: ClientProtocol,
        method: &http::Method,
        path: &str,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Arc<CallRecord> {
        if self.sinks.any() {
            let record = CallRecord::call(&self.sinks, protocol, method, path, headers);
            record.client(self.client_of(headers, peer));
            record
        } else {
            CallRecord::none()
        }
    }

    /// Who the client of a request from `peer` is: the peer, or whom a
    /// trusted proxy names.
    pub fn client_of(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Option<SocketAddr> {
        forwarded::client(headers, peer, &self.trusted_proxies)
    }

    /// As [`Edge::new`], with the proxies to trust.
    pub fn with_proxies(mut self, trusted: Vec<forwarded::Cidr>) -> Edge {
        self.trusted_proxies = trusted;
        self
    }

    /// Starts a request's policy view from its headers and the connection's
    /// client certificate (which the listener put in its extensions).
    pub fn inbound(&self, headers: &HeaderMap, extensions: &http::Extensions) -> Inbound {
        self.inbound_owned(headers.clone(), extensions)
    }

    /// As [`Edge::inbound`], taking the headers without a copy.
    pub fn inbound_owned(&self, headers: HeaderMap, extensions: &http::Extensions) -> Inbound {
        Inbound {
            headers,
            client_cert: extensions.get::<Arc<ClientCertificate>>().cloned(),
            over_tls: extensions.get::<OverTls>().is_some(),
            record: None,
        }
    }

    /// Takes the credential parameters (`?api_key=`) out of a query string
    /// into the policy view, under the header their authenticator reads; a
    /// header the client sent itself wins. Returns the rest of the query.
    pub fn lift_query<'a>(
        &self,
        inbound: &mut Inbound,
        query: Option<&'a str>,
    ) -> Option<Cow<'a, str>> {
        crate::headers::lift_query_credentials(
            query,
            &self.metadata.query_credentials,
            &mut inbound.headers,
        )
    }

    /// The credentials of a WebSocket handshake that browsers cannot send as
    /// headers: a `portico.token.` subprotocol entry or the configured query
    /// parameter (taken out of `query`) becomes `authorization: Bearer`, and
    /// credential parameters are lifted as for [`Edge::lift_query`].
    pub fn lift_websocket(
        &self,
        inbound: &mut Inbound,
        offered_subprotocols: &[String],
        query: &mut Vec<(String, String)>,
    ) -> Result<(), crate::error::GatewayError> {
        crate::headers::lift_credentials(
            query,
            &self.metadata.query_credentials,
            &mut inbound.headers,
        );
        // A token entry that cannot be read is refused, not skipped: the
        // client meant to send a credential, and "needs a bearer token"
        // would not tell it what was wrong.
        let mut entries = offered_subprotocols
            .iter()
            .filter_map(|p| p.strip_prefix(TOKEN_PREFIX));
        let first_entry = entries.next();
        // Two different tokens are two credentials, as a header and a
        // query token are: neither is picked.
        if entries.any(|e| Some(e) != first_entry) {
            return Err(crate::error::GatewayError::invalid_field(
                "sec-websocket-protocol",
                format!("the request carries more than one credential (two different {TOKEN_PREFIX} entries); send one"),
            ));
        }
        let from_subprotocol = match first_entry {
            Some(t) => {
                use base64::Engine as _;
                // Said apart: bytes that are not base64url, and base64url
                // of something that is not a token's text.
                let token = match base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t.trim_end_matches('='))
                {
                    Err(_) => Err("is not written in base64url (padding optional)"),
                    Ok(d) => match String::from_utf8(d) {
                        Ok(t) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()) => Ok(t),
                        Ok(t) if t.is_empty() => Err("decodes to an empty token"),
                        _ => Err("is base64url, but not of a token (the token's text, printable ASCII without spaces)"),
                    },
                };
                match token {
                    Ok(token) => Some((token, "the portico.token. subprotocol entry".to_owned())),
                    Err(why) => {
                        return Err(crate::error::GatewayError::invalid_field(
                            "sec-websocket-protocol",
                            format!("the {TOKEN_PREFIX} entry {why}"),
                        ))
                    }
                }
            }
            None => None,
        };
        // The query parameter is taken out of the query whether used or
        // not, each time it is given: one left behind would reach the
        // method as a field. Given twice with two tokens, it is two
        // credentials, as two subprotocol entries are.
        let mut from_query = None;
        if let Some(name) = &self.token_query_param {
            let mut given: Vec<String> = Vec::new();
            query.retain(|(k, v)| {
                let token = k == name;
                if token && !given.contains(v) {
                    given.push(v.clone());
                }
                !token
            });
            if given.iter().any(String::is_empty) {
                return Err(crate::error::GatewayError::invalid_field(
                    name.as_str(),
                    format!("the query parameter {name:?} is empty: give the token, or leave the parameter out"),
                ));
            }
            if given.len() > 1 {
                return Err(crate::error::GatewayError::invalid_field(
                    name.as_str(),
                    format!("the request carries more than one credential (two different tokens in the query parameter {name:?}); send one"),
                ));
            }
            from_query = given
                .pop()
                .map(|token| (token, format!("the query parameter {name:?}")));
        }
        // Two different tokens are two credentials, wherever they came from.
        if let (Some((a, _)), Some((b, from))) = (&from_subprotocol, &from_query) {
            if a != b {
                return Err(crate::error::GatewayError::invalid_field(
                    "authorization",
                    format!(
                        "the request carries more than one credential (a token in the portico.token. subprotocol entry and another in {from}); send one"
                    ),
                ));
            }
        }
        if let Some((token, source)) = from_subprotocol.or(from_query) {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                crate::error::GatewayError::invalid_field("token", "is not a valid header value")
            })?;
            // Beside an Authorization header the client sent itself, a
            // different token is a second credential: refused here, whether
            // or not the route authenticates, so a backend never gets one
            // the client did not choose.
            match inbound.headers.get(http::header::AUTHORIZATION) {
                Some(sent) if *sent == value => {}
                Some(_) => {
                    return Err(crate::error::GatewayError::invalid_field(
                        "authorization",
                        format!(
                            "the request carries more than one credential (an Authorization header and a token in {source}); send one"
                        ),
                    ))
                }
                None => {
                    inbound.headers.insert(http::header::AUTHORIZATION, value);
                }
            }
        }
        Ok(())
    }

    /// The metadata the backend receives: the policy view through the one
    /// forwarding rule.
    /// A name or value gRPC metadata cannot carry (a name with other than
    /// lowercase letters, digits, `_`, `-` and `.`; a value outside
    /// printable ASCII in a header whose name does not end in `-bin`) is
    /// not forwarded: the backend would refuse the call, or read bytes the
    /// client did not mean.
    pub fn metadata(&self, headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            if self.forwards(name) {
                if !crate::headers::is_grpc_key(name) {
                    tracing::debug!(header = %name, "not forwarded: not a gRPC metadata name");
                    continue;
                }
                let binary = name.as_str().ends_with("-bin");
                if !binary && !crate::headers::is_grpc_ascii(value.as_bytes()) {
                    tracing::debug!(header = %name, "not forwarded: not printable ASCII");
                    continue;
                }
                // Several binary values in one field (`a, b`: how HTTP/1.1
                // and `fetch` send two) go on as a field each: a gRPC
                // library reads a `-bin` field as one base64 value, and one
                // it cannot read can spoil the connection's HPACK table for
                // every caller (grpc-core keeps the failed entry).
                if binary && value.as_bytes().contains(&b',') {
                    for part in value.as_bytes().split(|b| *b == b',') {
                        if let Ok(v) = HeaderValue::from_bytes(part.trim_ascii()) {
                            out.append(name.clone(), v);
                        }
                    }
                    continue;
                }
                out.append(name.clone(), value.clone());
            }
        }
        out
    }

    /// Whether a client header reaches the backend. The request id always
    /// does: it is how a backend's logs meet the gateway's.
    pub fn forwards(&self, name: &HeaderName) -> bool {
        *name == request_id::HEADER
            || !is_framing(name)
                && !is_protocol_own(name.as_str())
                && !crate::headers::is_request_override(name.as_str())
                && !self.metadata.gateway_owned.contains(name)
                && self.metadata.allows(name.as_str())
    }

    /// The client's deadline: `grpc-timeout` (gRPC, gRPC-Web, and any other
    /// client that sends it) or `connect-timeout-ms`; `None` when
    /// `metadata.honour_client_timeout` is off.
    pub fn client_timeout(&self, headers: &HeaderMap) -> Option<Duration> {
        if !self.metadata.honour_client_timeout {
            return None;
        }
        let grpc = headers
            .get(crate::headers::GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let connect = headers
            .get(crate::headers::CONNECT_TIMEOUT_MS)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::headers::parse_connect_timeout);
        match (grpc, connect) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops the headers named with `_` at once, under
    /// `metadata.headers_with_underscores = "drop"`: a WebSocket
    /// handshake's, which every call of its session brings through
    /// [`Edge::context`] again, so each is dropped and counted once.
    pub fn drop_underscored_now(&self, headers: &mut HeaderMap) {
        if self.metadata.drop_underscored {
            drop_underscored(headers);
        }
    }

    /// The policies' context for a request: its headers as the edge made
    /// them and the client's deadline.
    pub fn context(
        &self,
        inbound: Inbound,
        client: Option<SocketAddr>,
        started: Instant,
    ) -> RequestCtx {
        let mut headers = inbound.headers;
        if self.metadata.drop_underscored {
            drop_underscored(&mut headers);
        }
        // Who the client is: the peer, or whom a trusted proxy names.
        let scheme = if inbound.over_tls { "https" } else { "http" };
        let client = forwarded::apply(&mut headers, client, &self.trusted_proxies, scheme);
        let mut ctx = RequestCtx::new(client, Arc::new(headers));
        ctx.client_cert = inbound.client_cert;
        if let Some(record) = inbound.record {
            record.client(client);
            ctx.record = record;
        }
        ctx.client_timeout = self.client_timeout(&ctx.headers);
        ctx.started = started;
        ctx
    }

    /// When a call's deadline passes (it counts from the request's
    /// arrival, `started`), for reading its request: a client that
    /// trickles its body past it is answered then, not when the body ends.
    pub fn deadline_at(
        &self,
        headers: &HeaderMap,
        target: &Target,
        started: Instant,
    ) -> Option<Instant> {
        deadline(target.kind, self.client_timeout(headers), target.timeout)
            .and_then(|timeout| started.checked_add(timeout))
    }

    /// The envelope for a call: metadata by the forwarding rule, the
    /// deadline, and the policy view in its context.
    pub fn envelope(
        &self,
        inbound: Inbound,
        target: Arc<Target>,
        payload: Payload,
        client: Option<SocketAddr>,
        started: Instant,
    ) -> Envelope {
        let ctx = self.context(inbound, client, started);
        let timeout = deadline(target.kind, ctx.client_timeout, target.timeout);
        let metadata = self.metadata(&ctx.headers);
        Envelope {
            timeout,
            metadata,
            payload,
            target,
            ctx,
        }
    }
}

/// Whether a backend's reply metadata entry may reach the client: anything
/// but the gateway's own framing and CORS headers. CORS is the gateway's
/// policy alone: a backend's `Access-Control-Allow-Credentials` beside the
/// gateway's `Access-Control-Allow-Origin` would grant a page more than
/// the policy does. Nor may a backend speak for the client protocols
/// (`connect-*`, `sec-websocket-*`, `mcp-*`): a `connect-content-encoding`
/// would tell a Connect client its messages were compressed.
pub fn reaches_client(name: &HeaderName) -> bool {
    !is_framing(name)
        && !name.as_str().starts_with("access-control-")
        && !is_protocol_own(name.as_str())
}

/// Adds a metadata entry to a JSON object of metadata (a WebSocket call's
/// `headers` and `trailers`, an MCP result's `_meta`): a name sent more
/// than once is one entry, its values joined with `, ` in the order sent,
/// as HTTP combines a repeated field (RFC 9110 section 5.3) and so as a
/// REST client reading the header as one value gets it. `set-cookie`,
/// which HTTP never combines, is joined too: an object holds a name once,
/// and dropping a value would lose it.
pub fn add_json_metadata(
    out: &mut serde_json::Map<String, serde_json::Value>,
    name: &HeaderName,
    value: &str,
) {
    match out.get_mut(name.as_str()) {
        Some(serde_json::Value::String(seen)) => {
            seen.push_str(", ");
            seen.push_str(value);
        }
        _ => {
            out.insert(
                name.as_str().to_owned(),
                serde_json::Value::String(value.to_owned()),
            );
        }
    }
}

/// Copies a reply's metadata (headers or trailers) to the client's headers,
/// under `prefix` (Connect's `trailer-`), leaving out the gateway's own.
pub fn copy_reply_metadata(from: &HeaderMap, to: &mut HeaderMap, prefix: &str) {
    for (name, value) in from {
        if !reaches_client(name) {
            continue;
        }
        if prefix.is_empty() {
            to.append(name.clone(), value.clone());
        } else if let Ok(n) =
            HeaderName::from_bytes(format!("{prefix}{}", name.as_str()).as_bytes())
        {
            to.append(n, value.clone());
        }
    }
}

#[cfg(test)]
mod tests;

/// Headers an HTTP/1.1 client's `Connection` names are for this hop alone
/// (RFC 9110 section 7.6.1): taken out of the request before anything
/// reads it (its id, the policies, the cache key), so naming one cannot
/// take from the backend what the gateway sets (`x-request-id`,
/// `X-Forwarded-*`) nor key a cached reply by a header the backend never
/// got. Framing headers it names (`Upgrade`, `Keep-Alive`, `TE`) and the
/// client protocols' own (`grpc-*`, `connect-*`, `sec-websocket-*`,
/// `mcp-*`) stay for the gateway to read, the hop they are meant for, so
/// `grpc-timeout` and `connect-timeout-ms` named there both still set the
/// deadline; `X-Forwarded-For` stays for the edge to judge by its trusted
/// proxies (a client behind one must not erase the proxy's chain). None of
/// them is forwarded as it came.
pub fn drop_connection_named(headers: &mut HeaderMap) {
    let Some(first) = headers.get(http::header::CONNECTION) else {
        return;
    };
    // The common values name no header that is not framing (and the map's
    // two counts say when no field came twice, without another lookup).
    let v = first.as_bytes();
    let common = v.eq_ignore_ascii_case(b"keep-alive")
        || v.eq_ignore_ascii_case(b"close")
        || v.eq_ignore_ascii_case(b"upgrade");
    if common
        && (headers.len() == headers.keys_len()
            || headers.get_all(http::header::CONNECTION).iter().count() == 1)
    {
        return;
    }
    let named: Vec<HeaderName> = crate::headers::connection_named(headers)
        .into_iter()
        // `X-Forwarded-For` stays to name the client: the gateway writes
        // the backend's own (see `forwarded::apply`). The others are for
        // this hop alone: gone, the gateway sets `X-Forwarded-Proto` and
        // `-Host` from what it saw.
        .filter(|name| {
            !is_framing(name) && !is_protocol_own(name.as_str()) && *name != "x-forwarded-for"
        })
        .collect();
    for name in named {
        headers.remove(name);
    }
}
