//! Response caching for unary calls that are safe to repeat (GET-bound,
//! `NO_SIDE_EFFECTS`, or listed in the route's cache). The key is the
//! method, the request message's bytes, the route's `vary` headers and, on
//! an authenticated route, the principal: one caller's reply is never served
//! to another. Concurrent identical misses make one backend call. A reply
//! is cached in protocol-neutral form, so a REST miss can be a gRPC hit.
//!
//! The client's `cache-control: no-cache` skips the lookup and `no-store`
//! the cache entirely; the backend's `cache-control: no-store` or `private`
//! is never cached and its `max-age` shortens the route's TTL. Replies carry
//! `x-cache: HIT` or `MISS`.

pub mod config;

use super::per_route::{Next, Policy};
use crate::config::CacheConfig;
use crate::envelope::{Envelope, Payload, Reply};
use crate::error::GatewayError;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::{Service, ServiceExt};

struct Entry {
    metadata: HeaderMap,
    message: Bytes,
    expires: Instant,
}

pub struct ResponseCache {
    config: CacheConfig,
    store: moka::future::Cache<Vec<u8>, Arc<Entry>>,
}

impl ResponseCache {
    pub fn new(config: CacheConfig) -> Self {
        let store = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            // Size-bounded in bytes, not entries.
            .weigher(|key: &Vec<u8>, e: &Arc<Entry>| {
                let headers: usize = e
                    .metadata
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len())
                    .sum();
                u32::try_from(key.len() + e.message.len() + headers).unwrap_or(u32::MAX)
            })
            .time_to_live(config.ttl)
            .build();
        ResponseCache { config, store }
    }

    fn key(&self, env: &Envelope, message: &Bytes) -> Vec<u8> {
        let mut key = Vec::with_capacity(64 + message.len());
        key.extend_from_slice(env.target.path.as_str().as_bytes());
        key.push(0);
        key.extend_from_slice(&(message.len() as u64).to_be_bytes());
        key.extend_from_slice(message);
        for h in &self.config.vary {
            key.push(0);
            for v in env.ctx.headers.get_all(h) {
                key.extend_from_slice(v.as_bytes());
                key.push(b'\n');
            }
        }
        if let Some(p) = &env.ctx.principal {
            key.push(1);
            key.extend_from_slice(p.subject.as_bytes());
        }
        key
    }
}

fn directives(h: &HeaderMap) -> Vec<String> {
    h.get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase())
        .collect()
}

/// How long the backend lets its reply be kept (`None`: as the route says).
fn backend_lifetime(metadata: &HeaderMap) -> Option<Duration> {
    let d = directives(metadata);
    if d.iter()
        .any(|d| d == "no-store" || d == "private" || d == "no-cache")
    {
        return Some(Duration::ZERO);
    }
    d.iter()
        .find_map(|d| d.strip_prefix("max-age=")?.parse().ok())
        .map(Duration::from_secs)
}

fn with_verdict(mut metadata: HeaderMap, verdict: &'static str) -> HeaderMap {
    metadata.insert("x-cache", HeaderValue::from_static(verdict));
    metadata
}

impl Policy for ResponseCache {
    fn call(
        self: Arc<Self>,
        env: Envelope,
        next: Next,
    ) -> BoxFuture<'static, Result<Reply, GatewayError>> {
        let cache = self;
        if !env.target.cacheable {
            return pass(env, next);
        }
        let client = directives(&env.ctx.headers);
        let message = match &env.payload {
            Payload::Unary(m) if !client.iter().any(|d| d == "no-store") => m.clone(),
            _ => return pass(env, next),
        };
        let key = cache.key(&env, &message);
        let skip_lookup = client.iter().any(|d| d == "no-cache");
        Box::pin(async move {
            if let Some(hit) = cache.store.get(&key).await {
                if hit.expires > Instant::now() && !skip_lookup {
                    return Ok(Reply::single(
                        with_verdict(hit.metadata.clone(), "HIT"),
                        hit.message.clone(),
                    ));
                }
                cache.store.invalidate(&key).await;
            }
            // Concurrent misses for the same key wait for this one backend call.
            let ttl = cache.config.ttl;
            let entry = cache
                .store
                .try_get_with(key, async move {
                    let reply = next.oneshot(env).await?;
                    let (metadata, message) = reply.into_unary().await?;
                    let lifetime = backend_lifetime(&metadata).map_or(ttl, |d| d.min(ttl));
                    Ok::<_, GatewayError>(Arc::new(Entry {
                        metadata,
                        message,
                        expires: Instant::now() + lifetime,
                    }))
                })
                .await
                .map_err(|e: Arc<GatewayError>| (*e).clone())?;
            Ok(Reply::single(
                with_verdict(entry.metadata.clone(), "MISS"),
                entry.message.clone(),
            ))
        })
    }
}

fn pass(env: Envelope, mut next: Next) -> BoxFuture<'static, Result<Reply, GatewayError>> {
    Box::pin(async move { next.call(env).await })
}
