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
//!
//! With `shared = true`, Redis is a second tier behind the in-process one,
//! shared by every instance of the fleet: a local miss looks there before
//! calling the backend, and a reply from the backend is written there with
//! the same lifetime. Redis being unavailable only skips the tier.

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
    /// Read from the shared tier rather than the backend.
    shared_hit: bool,
}

pub struct ResponseCache {
    config: CacheConfig,
    store: moka::future::Cache<Vec<u8>, Arc<Entry>>,
    /// The fleet, when replies are shared through Redis.
    fleet: Option<Arc<crate::fleet::Fleet>>,
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
        ResponseCache {
            config,
            store,
            fleet: None,
        }
    }

    /// A cache whose replies are also kept in the fleet's Redis.
    pub fn shared(config: CacheConfig, fleet: Arc<crate::fleet::Fleet>) -> Self {
        ResponseCache {
            fleet: Some(fleet),
            ..ResponseCache::new(config)
        }
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
            let shared = match (&cache.fleet, cache.config.shared) {
                (Some(fleet), Some(max)) => {
                    use sha2::{Digest, Sha256};
                    let id = crate::app::generation::hex(&Sha256::digest(&key));
                    Some((fleet.clone(), fleet.key("cache", &id), max))
                }
                _ => None,
            };
            let entry = cache
                .store
                .try_get_with(key, async move {
                    // `no-cache` skips every lookup, the shared tier's too.
                    if let Some((fleet, redis_key, _)) = shared.as_ref().filter(|_| !skip_lookup) {
                        if let Ok(Some((bytes, left))) = fleet.get(redis_key).await {
                            if let Some((metadata, message)) = shared_tier::decode(&bytes) {
                                fleet
                                    .stats
                                    .shared_cache_hits
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                return Ok(Arc::new(Entry {
                                    metadata,
                                    message,
                                    expires: Instant::now() + left.min(ttl),
                                    shared_hit: true,
                                }));
                            }
                        }
                    }
                    let reply = next.oneshot(env).await?;
                    let (metadata, message) = reply.into_unary().await?;
                    let lifetime = backend_lifetime(&metadata).map_or(ttl, |d| d.min(ttl));
                    if let Some((fleet, redis_key, max)) = &shared {
                        let bytes = shared_tier::encode(&metadata, &message);
                        if !lifetime.is_zero() && bytes.len() as u64 <= *max {
                            // Bounded by redis.command_timeout; a failure only
                            // means other instances miss this reply.
                            let _ = fleet.set(redis_key, &bytes, lifetime).await;
                        }
                    }
                    Ok::<_, GatewayError>(Arc::new(Entry {
                        metadata,
                        message,
                        expires: Instant::now() + lifetime,
                        shared_hit: false,
                    }))
                })
                .await
                .map_err(|e: Arc<GatewayError>| (*e).clone())?;
            let verdict = if entry.shared_hit { "HIT" } else { "MISS" };
            Ok(Reply::single(
                with_verdict(entry.metadata.clone(), verdict),
                entry.message.clone(),
            ))
        })
    }
}

fn pass(env: Envelope, mut next: Next) -> BoxFuture<'static, Result<Reply, GatewayError>> {
    Box::pin(async move { next.call(env).await })
}

/// The shared tier's value: a reply's metadata and message in one blob
/// (`PC1`, the header count, each name and value with its length, then
/// the message).
mod shared_tier {
    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, HeaderValue};

    pub fn encode(metadata: &HeaderMap, message: &Bytes) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + message.len());
        out.extend_from_slice(b"PC1");
        out.extend_from_slice(&(metadata.len() as u32).to_be_bytes());
        for (name, value) in metadata {
            out.extend_from_slice(&(name.as_str().len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(message);
        out
    }

    /// `None` for anything this version did not write.
    pub fn decode(bytes: &[u8]) -> Option<(HeaderMap, Bytes)> {
        let mut rest = bytes.strip_prefix(b"PC1")?;
        let mut take = |n: usize| -> Option<&[u8]> {
            if rest.len() < n {
                return None;
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Some(head)
        };
        let len = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let count = len(take(4)?);
        // More names than a header map holds is not something this wrote.
        if count > 1024 {
            return None;
        }
        let mut metadata = HeaderMap::new();
        for _ in 0..count {
            let n = len(take(4)?);
            let name = HeaderName::from_bytes(take(n)?).ok()?;
            let n = len(take(4)?);
            let value = HeaderValue::from_bytes(take(n)?).ok()?;
            metadata.append(name, value);
        }
        let message = Bytes::copy_from_slice(take(0).map(|_| ())?.eq(&()).then_some(rest)?);
        Some((metadata, message))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_reply_survives_the_round_trip_and_garbage_does_not_decode() {
            let mut m = HeaderMap::new();
            m.append("x-a", HeaderValue::from_static("1"));
            m.append("x-a", HeaderValue::from_static("2"));
            m.insert("cache-control", HeaderValue::from_static("max-age=60"));
            let body = Bytes::from_static(b"\x0a\x03abc");
            let (m2, b2) = decode(&encode(&m, &body)).unwrap();
            assert_eq!(m2, m);
            assert_eq!(b2, body);
            assert!(decode(b"PC1\xff\xff\xff\xff").is_none());
            assert!(decode(b"nope").is_none());
            let full = encode(&m, &body);
            assert!(decode(&full[..10]).is_none());
        }
    }
}
