//! `[websocket]`: keepalive, limits, browser origins and credentials.

use crate::config::{file, ConfigError, Validator};
use std::time::Duration;

/// WebSocket sessions: keepalive, limits, browser origins and credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSocketConfig {
    /// The gateway pings every connection this often.
    pub ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout: Duration,
    /// Largest message a client may send in one frame.
    pub max_message_bytes: usize,
    /// Client messages queued for one call before the backend takes them.
    pub max_in_flight: usize,
    /// Calls open at once on one connection.
    pub max_calls: usize,
    /// Origins allowed besides the gateway's own; `*` for any. Browsers'
    /// cross-origin pages are refused unless listed.
    pub allowed_origins: Vec<String>,
    /// Query parameter that carries a bearer token.
    pub token_query_param: Option<String>,
    /// Calls a connection may open per second (a bucket of one second's worth).
    pub calls_per_second: Option<ConnectionRate>,
    /// Messages (frames with data) a connection may send per second.
    pub messages_per_second: Option<ConnectionRate>,
}

/// A per-connection token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectionRate {
    pub rate: f64,
    pub burst: u32,
}

/// The most `websocket.max_in_flight` may be.
pub const MAX_IN_FLIGHT: usize = 65_536;

impl Default for WebSocketConfig {
    fn default() -> Self {
        WebSocketConfig {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
            max_message_bytes: 1024 * 1024,
            max_in_flight: 32,
            max_calls: 100,
            allowed_origins: Vec::new(),
            token_query_param: None,
            calls_per_second: None,
            messages_per_second: None,
        }
    }
}

impl Validator<'_> {
    pub(crate) fn websocket(
        &self,
        w: &file::WebSocketFile,
    ) -> Result<WebSocketConfig, ConfigError> {
        let d = WebSocketConfig::default();
        let positive = |key: &str,
                        v: Option<usize>,
                        default: usize|
         -> Result<usize, ConfigError> {
            match v {
                Some(0) => Err(self.err(format!("websocket.{key}"), "must be greater than zero")),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        if w.token_cookie.is_some() {
            return Err(self.err(
                "websocket.token_cookie",
                "was replaced by the authenticator's `cookie` option, which reads the cookie for every protocol",
            ));
        }
        let allowed_origins = w.allowed_origins.clone().unwrap_or_default();
        for (i, o) in allowed_origins.iter().enumerate() {
            if o != "*" {
                self.origin(&format!("websocket.allowed_origins[{i}]"), o)?;
            }
        }
        let ping_interval =
            self.duration("websocket.ping_interval", &w.ping_interval, d.ping_interval)?;
        let idle_timeout =
            self.duration("websocket.idle_timeout", &w.idle_timeout, d.idle_timeout)?;
        // A client that only listens answers pings and nothing else: pings
        // further apart than the idle timeout would close every such client.
        if ping_interval >= idle_timeout {
            let key = if w.ping_interval.is_some() {
                "websocket.ping_interval"
            } else {
                "websocket.idle_timeout"
            };
            return Err(self.err(
                key,
                format!(
                    "ping_interval ({}) must be shorter than idle_timeout ({}): a client that only listens sends nothing but its answers to pings",
                    humantime::format_duration(ping_interval),
                    humantime::format_duration(idle_timeout)
                ),
            ));
        }
        // The handshake reads `method` itself, and an empty name names nothing.
        if let Some(p) = &w.token_query_param {
            if p.is_empty() || p == "method" {
                return Err(self.err(
                    "websocket.token_query_param",
                    format!("{p:?} cannot carry a token: name a parameter of its own, such as \"access_token\" (\"method\" picks a REST binding's method)"),
                ));
            }
        }
        Ok(WebSocketConfig {
            ping_interval,
            idle_timeout,
            max_message_bytes: positive(
                "max_message_bytes",
                w.max_message_bytes,
                d.max_message_bytes,
            )?,
            max_in_flight: match positive("max_in_flight", w.max_in_flight, d.max_in_flight)? {
                v if v > MAX_IN_FLIGHT => {
                    return Err(self.err(
                        "websocket.max_in_flight",
                        format!("{v} is over the most allowed, {MAX_IN_FLIGHT}: each call's queue is bounded by it"),
                    ))
                }
                v => v,
            },
            max_calls: positive("max_calls", w.max_calls, d.max_calls)?,
            allowed_origins,
            token_query_param: w.token_query_param.clone(),
            calls_per_second: self.connection_rate("calls_per_second", w.calls_per_second)?,
            messages_per_second: self
                .connection_rate("messages_per_second", w.messages_per_second)?,
        })
    }

    pub(crate) fn connection_rate(
        &self,
        key: &str,
        rate: Option<f64>,
    ) -> Result<Option<ConnectionRate>, ConfigError> {
        match rate {
            None => Ok(None),
            Some(r) => {
                let rate = self.rate(&format!("websocket.{key}"), r)?;
                Ok(Some(ConnectionRate {
                    rate,
                    burst: rate.ceil().max(1.0) as u32,
                }))
            }
        }
    }
}
