//! Response caching for unary calls that are safe to repeat (GET-bound,
//! `NO_SIDE_EFFECTS`, or listed in the route's cache), by RFC 9111's rules
//! for a shared cache and safer than them by default. The key is the method,
//! the request message's bytes, the route's `vary` headers, the headers the
//! backend's own `Vary` names, the forwarding headers the backend receives
//! (`x-forwarded-host`, `x-forwarded-proto`, `forwarded`), and the caller:
//! the request's credentials (`authorization`, `cookie`, API keys)
//! themselves as the client sent them, the headers an authorization service
//! set for the backend, and on an authenticated route also the principal,
//! the authenticator that verified it and the claims the backend is sent, so
//! one caller's reply is never served to another or to an anonymous
//! client. Concurrent
//! identical misses make one backend call. A reply is cached in
//! protocol-neutral form, so a REST miss can be a gRPC hit.
//!
//! The client's `cache-control: no-cache` skips the lookup and `no-store`
//! the cache entirely; a backend reply with `cache-control: no-store`,
//! `no-cache` or `private`, a `set-cookie`, `vary: *`, or an
//! `x-http-status` of `304` or `206` is never stored,
//! and its `s-maxage` (else `max-age`) shortens the route's TTL. Replies
//! carry `x-cache: HIT` or `MISS`.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::{Service, ServiceExt};

struct Entry {
    reply: StoredReply,
    /// When this instance stored it, and how old it was then: a hit's
    /// `Age` is the sum.
    stored: Instant,
    aged: Duration,
    expires: Instant,
    /// Read from the shared tier rather than the backend.
    shared_hit: bool,
    /// The headers the reply's Vary names.
    vary: Vec<http::HeaderName>,
    /// The key of the request it was made for, with those headers' values.
    made_for: Vec<u8>,
    /// A `304` or `206` (see [`answers_request_headers`]): for the request
    /// that made it alone, never for one that waited on its call.
    only_for_its_request: bool,
}

pub struct ResponseCache {
    config: CacheConfig,
    store: moka::future::Cache<Vec<u8>, Arc<Entry>>,
    /// The headers the backend's `Vary` named, by key before them: learned
    /// from a reply, used to key the next request for the same thing.
    varies: moka::sync::Cache<Vec<u8>, Arc<Vec<http::HeaderName>>>,
    /// Set once any reply carried a Vary: until then no request looks in
    /// `varies`.
    any_vary: AtomicBool,
    /// The fleet, when replies are shared through Redis.
    fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl ResponseCache {
    pub fn new(config: CacheConfig) -> Self {
        let store = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            // Size-bounded in bytes, not entries.
            .weigher(|key: &Vec<u8>, e: &Arc<Entry>| {
                u32::try_from(weight(key, &e.reply)).unwrap_or(u32::MAX)
            })
            .time_to_live(config.ttl)
            .build();
        let varies = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.ttl)
            .build();
        ResponseCache {
            config,
            store,
            varies,
            any_vary: AtomicBool::new(false),
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
        // Protobuf leaves map entries' order to the writer (Go's Marshal
        // varies it from call to call): one request is one key whatever
        // order its client wrote them in.
        let in_key_order = env
            .target
            .request_has_maps
            .then(|| crate::transcode::map_order::sorted(&env.target.method.input(), message))
            .flatten();
        let message: &[u8] = in_key_order.as_deref().unwrap_or(message);
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
        // What the backend sees of the request's origin, which it may use
        // to build the reply (links, redirects).
        for h in &FORWARDING {
            key.push(0);
            for v in env.metadata.get_all(h) {
                key.extend_from_slice(v.as_bytes());
                key.push(b'\n');
            }
        }
        // The caller: a reply built for one credential is never another's.
        if let Some(p) = &env.ctx.principal {
            // By subject and by the authenticator that verified it: a token's
            // `ada` and an API key's `ada` may get different replies.
            key.push(1);
            key.extend_from_slice(&(env.ctx.authenticated_by as u32).to_be_bytes());
            key.extend_from_slice(p.subject.as_bytes());
            // And by the verified claims the backend is sent: two
            // certificates of one identity may carry different ones.
            for h in env.ctx.claim_headers.iter().flat_map(|c| c.iter()) {
                key.push(0);
                for v in env.metadata.get_all(h) {
                    key.extend_from_slice(v.as_bytes());
                    key.push(b'\n');
                }
            }
        }
        // What authorization services told the backend of the caller, by
        // name in order (a service that writes them in another order
        // tells the same).
        let mut told: Vec<&http::HeaderName> = env.ctx.service_headers.iter().collect();
        told.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        told.dedup();
        for h in told {
            key.push(4);
            key.extend_from_slice(h.as_str().as_bytes());
            key.push(0);
            for v in env.metadata.get_all(h) {
                key.extend_from_slice(v.as_bytes());
                key.push(b'\n');
            }
        }
        // The credentials themselves, verified or not, as the client sent
        // them (a policy may have taken one out): two tokens of one
        // subject may hold different claims (a tenant, scopes), and the
        // backend may read the token it is passed.
        use sha2::{Digest, Sha256};
        let mut credentials = Sha256::new();
        let mut any = false;
        let sent = env.ctx.edge_headers();
        for h in &self.config.credential_headers {
            for v in sent.get_all(h) {
                credentials.update(h.as_str());
                credentials.update(v.as_bytes());
                credentials.update(b"\n");
                any = true;
            }
        }
        if any {
            key.push(2);
            key.extend_from_slice(&credentials.finalize());
        }
        key
    }

    /// The key with the values of the headers the backend's `Vary` named.
    fn varied(base: &[u8], names: &[http::HeaderName], headers: &HeaderMap) -> Vec<u8> {
        let mut key = base.to_vec();
        for name in names {
            key.push(3);
            key.extend_from_slice(name.as_str().as_bytes());
            key.push(0);
            for v in headers.get_all(name) {
                key.extend_from_slice(v.as_bytes());
                key.push(b'\n');
            }
        }
        key
    }
}

/// The verdict a cached route's replies carry.
const X_CACHE: http::HeaderName = http::HeaderName::from_static("x-cache");

/// The forwarding headers a backend receives, part of every key.
const FORWARDING: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-forwarded-host"),
    http::HeaderName::from_static("x-forwarded-proto"),
    http::header::FORWARDED,
];

/// The headers a reply's `Vary` names; `None` for `Vary: *` (it varies on
/// anything, so it is not stored).
fn vary_names(metadata: &HeaderMap) -> Option<Vec<http::HeaderName>> {
    let mut names = Vec::new();
    for v in metadata.get_all(http::header::VARY) {
        for name in v.to_str().unwrap_or("*").split(',') {
            let name = name.trim().to_ascii_lowercase();
            if name == "*" {
                return None;
            }
            if let Ok(n) = http::HeaderName::from_bytes(name.as_bytes()) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// A `Cache-Control` field's directives: lowercase names, each with its
/// value unquoted. Commas inside a quoted value (`private="a, b"`) do not
/// split it, nor does an escaped quote (`\"`) end it. `None` when a field
/// cannot be read (not text, a quote left open): a cache must not guess
/// what it says.
fn directives(h: &HeaderMap) -> Option<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for field in h.get_all(http::header::CACHE_CONTROL).iter() {
        let field = field.to_str().ok()?;
        let mut quoted = false;
        let mut escaped = false;
        let mut start = 0;
        let end = std::iter::once((field.len(), ','));
        for (i, c) in field.char_indices().chain(end) {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ',' if !quoted || i == field.len() => {
                    let directive = field[start..i].trim();
                    start = i + 1;
                    if directive.is_empty() {
                        continue;
                    }
                    let (name, value) = match directive.split_once('=') {
                        Some((n, v)) => (n, Some(v.trim().trim_matches('"').to_owned())),
                        None => (directive, None),
                    };
                    out.push((name.trim().to_ascii_lowercase(), value));
                }
                _ => {}
            }
        }
        if quoted {
            return None;
        }
    }
    Some(out)
}

fn has(directives: &[(String, Option<String>)], name: &str) -> bool {
    directives.iter().any(|(n, _)| n == name)
}

/// How long the backend lets its reply be kept by a shared cache (`None`:
/// as the route says; zero: not at all).
///
/// Stricter than RFC 9111 where it lets a shared cache store part of a
/// reply: `private` and `no-cache` keep the whole reply out, with or
/// without the fields they name (a cache that dropped only the named
/// fields would still answer without revalidating). A lifetime that
/// cannot be read (`max-age=abc`, `-5`, a malformed or past `Expires`)
/// is already stale, as RFC 9111 section 4.2.1 reads it.
fn backend_lifetime(metadata: &HeaderMap, age: Duration) -> Option<Duration> {
    let Some(d) = directives(metadata) else {
        return Some(Duration::ZERO);
    };
    if has(&d, "no-store") || has(&d, "private") || has(&d, "no-cache")
        // A cookie is one client's; a reply that sets one is not shared.
        || metadata.contains_key(http::header::SET_COOKIE)
        || vary_names(metadata).is_none()
        || answers_request_headers(metadata)
    {
        return Some(Duration::ZERO);
    }
    let max_age = |name: &str| {
        d.iter().find(|(n, _)| n == name).map(|(_, v)| {
            v.as_deref()
                .and_then(delta_seconds)
                .map_or(Duration::ZERO, Duration::from_secs)
        })
    };
    // A max-age counts from when the reply was made: less its Age.
    max_age("s-maxage")
        .or_else(|| max_age("max-age"))
        .map(|d| d.saturating_sub(age))
        .or_else(|| expires_in(metadata))
}

/// A reply whose `x-http-status` is `304 Not Modified` or `206 Partial
/// Content` answers the request's conditional or range headers, which the
/// key does not hold: served to a request without them, it would be an
/// empty or partial body (RFC 9110 sections 15.4.5 and 15.3.7).
fn answers_request_headers(metadata: &HeaderMap) -> bool {
    matches!(crate::headers::asked_http_status(metadata), Some(304 | 206))
}

/// How long to keep a reply from now (at most the route's `ttl`), and how
/// old it already is: a reply kept by a cache before the backend (its
/// `Age`) has that much less of its `max-age` left, and a hit's `Age`
/// counts from when it was made. `Date` is not read: a backend's clock or
/// its second-wide resolution would age every reply a little.
fn keep_for(metadata: &HeaderMap, ttl: Duration) -> (Duration, Duration) {
    let age = arrived_age(metadata);
    let lifetime = backend_lifetime(metadata, age).map_or(ttl, |d| d.min(ttl));
    (lifetime, age)
}

/// The reply's `Age` as it arrives (RFC 9111 section 5.1); none when it
/// cannot be read.
fn arrived_age(metadata: &HeaderMap) -> Duration {
    metadata
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| delta_seconds(v.trim()))
        .map_or(Duration::ZERO, Duration::from_secs)
}

/// A `delta-seconds` value (RFC 9111 section 1.2.2): digits only, and any
/// number past 2^31, however many digits, read as 2^31 as that section
/// says, so a huge `Age` still ages a reply out and a huge `max-age` is
/// still a long one.
fn delta_seconds(text: &str) -> Option<u64> {
    const MOST: u64 = 1 << 31;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().map_or(MOST, |n| n.min(MOST)))
}

/// What `Expires` leaves of the reply's life from now; `None` without one.
/// It is a point in time, so the reply's `Age` takes nothing more off it.
fn expires_in(metadata: &HeaderMap) -> Option<Duration> {
    let expires = metadata.get(http::header::EXPIRES)?;
    let Some(expires) = expires
        .to_str()
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok())
    else {
        return Some(Duration::ZERO);
    };
    Some(
        expires
            .duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A reply as the cache gives it: its verdict, and a `Vary` naming the
/// route's `vary` headers besides the backend's own, so a cache between
/// the gateway and the client keeps apart what the gateway keeps apart.
fn with_verdict(
    mut metadata: HeaderMap,
    verdict: &'static str,
    route_vary: &[http::HeaderName],
) -> HeaderMap {
    metadata.insert(X_CACHE, HeaderValue::from_static(verdict));
    let said: Vec<String> = metadata
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let missing: Vec<&str> = route_vary
        .iter()
        .map(http::HeaderName::as_str)
        .filter(|n| !said.iter().any(|s| s == n))
        .collect();
    if !missing.is_empty() {
        let all: Vec<&str> = said.iter().map(String::as_str).chain(missing).collect();
        if let Ok(v) = HeaderValue::from_str(&all.join(", ")) {
            metadata.insert(http::header::VARY, v);
        }
    }
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
        // A client's field that cannot be read asks for nothing.
        let client = directives(&env.ctx.headers).unwrap_or_default();
        let message = match &env.payload {
            Payload::Unary(m) if !has(&client, "no-store") => m.clone(),
            _ => return pass(env, next),
        };
        let base = cache.key(&env, &message);
        let skip_lookup = has(&client, "no-cache");
        Box::pin(async move {
            // The headers the backend's Vary named last time, if it answered
            // yet; no lookup while no reply has carried a Vary.
            let varied = if cache.any_vary.load(Ordering::Relaxed) {
                cache
                    .varies
                    .get(&base)
                    .map(|names| ResponseCache::varied(&base, &names, &env.ctx.headers))
            } else {
                None
            };
            let key: &[u8] = varied.as_deref().unwrap_or(&base);
            if let Some(hit) = cache.store.get(key).await {
                if hit.expires > Instant::now()
                    && !skip_lookup
                    && hit.made_for_request(&base, &env.ctx.headers)
                {
                    env.ctx
                        .record
                        .cache(&env.target, env.ctx.aggregate_call, "hit");
                    env.target.stats.record_cache_lookup(true);
                    let mut metadata =
                        with_verdict(hit.reply.metadata.clone(), "HIT", &cache.config.vary);
                    // RFC 9111 section 5.1: a stored reply says how long it
                    // has been kept, so a client's own cache does not count
                    // its max-age afresh.
                    metadata.insert(http::header::AGE, HeaderValue::from(hit.age().as_secs()));
                    return Ok(hit.reply.replay(metadata));
                }
                cache.store.invalidate(key).await;
            }
            let key = varied.unwrap_or_else(|| base.clone());
            let record = env.ctx.record.clone();
            let (target, aggregate_call) = (env.target.clone(), env.ctx.aggregate_call);
            // Looked up and not found: a miss, whatever the backend answers
            // (an error reply is logged as a miss too, and not stored).
            record.cache(&target, aggregate_call, "miss");
            env.target.stats.record_cache_lookup(false);
            let headers = env.ctx.headers.clone();
            let mine = {
                let (base, headers) = (base.clone(), headers.clone());
                move |e: &Entry| e.made_for_request(&base, &headers)
            };
            let shared = cache.shared_key(&key);
            // This request's own deadline holds while it waits for another's
            // backend call, as it would for its own.
            let wait_until = env.deadline().map(tokio::time::Instant::from_std);
            // Concurrent misses for the same key wait for this one backend
            // call. The call is left here until the closure takes it: a
            // waiter handed a reply made for other values of a header the
            // reply varies on (its Vary not known before) makes its own.
            let call = Arc::new(std::sync::Mutex::new(Some((env, next))));
            let taken = call.clone();
            let fetching = cache.clone();
            let (fetch_base, fetch_headers) = (base.clone(), headers.clone());
            let fetch_shared = shared.clone();
            let fetched = cache.store.try_get_with(key.clone(), async move {
                let (env, next) = take(&taken).expect("the call is made once");
                fetching
                    .fetch(
                        env,
                        next,
                        fetch_shared,
                        skip_lookup,
                        &fetch_base,
                        &fetch_headers,
                    )
                    .await
            });
            let fetched = match wait_until {
                Some(at) => tokio::time::timeout_at(at, fetched)
                    .await
                    .map_err(|_| GatewayError::deadline_exceeded())?,
                None => fetched.await,
            };
            let entry = match fetched {
                Ok(entry) => entry,
                // The call made for everyone ran out of its own client's
                // time: that is no answer for a request with more of it,
                // which makes its own call with what it has left.
                Err(e) if matches!(e.kind, crate::error::ErrorKind::DeadlineExceeded) => {
                    match take(&call) {
                        Some((env, next)) => {
                            cache
                                .fetch(env, next, shared.clone(), skip_lookup, &base, &headers)
                                .await?
                        }
                        None => return Err((*e).clone()),
                    }
                }
                Err(e) => return Err((*e).clone()),
            };
            let entry = match take(&call) {
                Some((env, next)) if !mine(&entry) => {
                    cache
                        .fetch(env, next, shared, skip_lookup, &base, &headers)
                        .await?
                }
                _ => entry,
            };
            if entry.made_for != key && entry.expires > Instant::now() {
                // Learned its Vary: kept under the key the next request
                // like it will look for.
                cache
                    .store
                    .insert(entry.made_for.clone(), entry.clone())
                    .await;
                cache.store.invalidate(&key).await;
            }
            let verdict = if entry.shared_hit { "HIT" } else { "MISS" };
            record.cache(
                &target,
                aggregate_call,
                if entry.shared_hit {
                    "shared-hit"
                } else {
                    "miss"
                },
            );
            let mut metadata =
                with_verdict(entry.reply.metadata.clone(), verdict, &cache.config.vary);
            if entry.shared_hit {
                // Kept by the fleet since another instance stored it.
                metadata.insert(http::header::AGE, HeaderValue::from(entry.age().as_secs()));
            }
            Ok(entry.reply.replay(metadata))
        })
    }
}

impl ResponseCache {
    /// The shared tier's key and entry size bound, when replies are shared.
    fn shared_key(&self, key: &[u8]) -> Option<(Arc<crate::fleet::Fleet>, String, u64)> {
        match (&self.fleet, self.config.shared) {
            (Some(fleet), Some(max)) => {
                use sha2::{Digest, Sha256};
                let id = crate::app::generation::hex(&Sha256::digest(key));
                Some((fleet.clone(), fleet.key("cache", &id), max))
            }
            _ => None,
        }
    }

    /// A reply from the shared tier or the backend, as an entry (expired at
    /// once when it may not be stored), with the headers its `Vary` names
    /// (`None` for `Vary: *`).
    async fn fetch(
        &self,
        env: Envelope,
        next: Next,
        shared: Option<(Arc<crate::fleet::Fleet>, String, u64)>,
        skip_lookup: bool,
        base: &[u8],
        headers: &HeaderMap,
    ) -> Result<Arc<Entry>, GatewayError> {
        let ttl = self.config.ttl;
        // `no-cache` skips every lookup, the shared tier's too.
        if let Some((fleet, redis_key, _)) = shared.as_ref().filter(|_| !skip_lookup) {
            let lookup = fleet.get(redis_key);
            let found = super::within_deadline(
                env.deadline(),
                "Redis answered the shared cache's lookup (the backend was not called)",
                lookup,
            )
            .await?;
            if let Ok(Some((bytes, left))) = found {
                let decoded = shared_tier::decode(&bytes).and_then(|(reply, stored)| {
                    // Another instance's clock: an age below zero is none.
                    let age = Duration::from_millis(unix_ms().saturating_sub(stored));
                    // Never past the route's ttl from when the reply was
                    // made, whatever lifetime Redis gives it: a write Redis
                    // ran late (queued while it was frozen) set it afresh.
                    let left = left.min(ttl.saturating_sub(age));
                    (!left.is_zero()).then_some((reply, left, age))
                });
                if let Some((reply, left, age)) = decoded {
                    let vary = vary_names(&reply.caching_fields());
                    let entry = self.entry(reply, vary, (left, age), true, base, headers);
                    // A reply that varies on a header is only for requests
                    // with the values it was made for, which an instance
                    // that had not seen its Vary looked it up without.
                    if entry.made_for_request(base, headers) {
                        fleet
                            .stats
                            .shared_cache_hits
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok(entry);
                    }
                }
            }
        }
        let reply = next.oneshot(env).await?;
        let (metadata, message, trailers) = reply.into_unary_parts().await?;
        let reply = StoredReply {
            metadata,
            message,
            trailers,
        };
        // Read once: with trailers, the fields are a merged copy.
        let (vary, (lifetime, age)) = {
            let fields = reply.caching_fields();
            (vary_names(&fields), keep_for(&fields, ttl))
        };
        if let Some((fleet, _, max)) = shared.filter(|_| !lifetime.is_zero()) {
            // Kept under the key of the request it was made for, with the
            // values of the headers its Vary names: where a request with
            // other values, on any instance, does not find it.
            let made_for =
                ResponseCache::varied(base, vary.as_deref().unwrap_or_default(), headers);
            // What is too large for this instance's memory is too large
            // for the fleet's.
            let fits = weight(&made_for, &reply) as u64 <= self.config.max_bytes;
            let made = unix_ms().saturating_sub(age.as_millis() as u64);
            if let Some((_, redis_key, _)) = self.shared_key(&made_for).filter(|_| fits) {
                let bytes = shared_tier::encode(&reply, made);
                if bytes.len() as u64 <= max {
                    // Written after the reply is on its way, so a slow
                    // Redis never spends the caller's deadline on what
                    // only other instances gain; a failure or a skipped
                    // write only means they miss this reply.
                    fleet.set_behind(redis_key, bytes, lifetime);
                }
            }
        }
        Ok(self.entry(reply, vary, (lifetime, age), false, base, headers))
    }

    /// An entry for a reply to a request with `headers`, learning the
    /// headers its Vary `names` (`None` for `Vary: *`, which comes with a
    /// zero lifetime); it lives `lifetime` from now and was stored `age` ago.
    fn entry(
        &self,
        reply: StoredReply,
        names: Option<Vec<http::HeaderName>>,
        (lifetime, age): (Duration, Duration),
        shared_hit: bool,
        base: &[u8],
        headers: &HeaderMap,
    ) -> Arc<Entry> {
        let vary = names.clone().unwrap_or_default();
        match names {
            Some(names) if !names.is_empty() => {
                self.any_vary.store(true, Ordering::Relaxed);
                self.varies.insert(base.to_vec(), Arc::new(names))
            }
            _ if self.any_vary.load(Ordering::Relaxed) => self.varies.invalidate(base),
            _ => {}
        }
        let made_for = ResponseCache::varied(base, &vary, headers);
        let only_for_its_request = answers_request_headers(&reply.caching_fields());
        let now = Instant::now();
        // A reply larger than the whole cache is answered, never kept: the
        // store would hold it until its housekeeping evicted it.
        let lifetime = if weight(&made_for, &reply) as u64 > self.config.max_bytes {
            Duration::ZERO
        } else {
            lifetime
        };
        Arc::new(Entry {
            reply,
            stored: now,
            aged: age,
            expires: now + lifetime,
            shared_hit,
            vary,
            made_for,
            only_for_its_request,
        })
    }
}

impl Entry {
    /// How long since the reply was made: its age on arrival, and its time here.
    fn age(&self) -> Duration {
        self.aged + self.stored.elapsed()
    }

    /// Whether it was made for a request like this one: the same values of
    /// every header its reply's Vary names. Without a Vary (the common
    /// case) that is the key itself, compared without building another.
    fn made_for_request(&self, base: &[u8], headers: &HeaderMap) -> bool {
        if self.only_for_its_request {
            return false;
        }
        if self.vary.is_empty() {
            return self.made_for == base;
        }
        ResponseCache::varied(base, &self.vary, headers) == self.made_for
    }
}

/// A unary reply as the backend sent it: its headers, its one message and
/// its trailers, kept apart so that a hit gives each protocol its trailers
/// where the backend's call did.
#[derive(Debug, Clone, PartialEq)]
struct StoredReply {
    metadata: HeaderMap,
    message: Bytes,
    trailers: HeaderMap,
}

impl StoredReply {
    /// The fields that say how the reply may be kept (`Cache-Control`,
    /// `Vary`, `Age`...), wherever the backend sent them.
    fn caching_fields(&self) -> std::borrow::Cow<'_, HeaderMap> {
        if self.trailers.is_empty() {
            return std::borrow::Cow::Borrowed(&self.metadata);
        }
        let mut all = self.metadata.clone();
        for (name, value) in &self.trailers {
            all.append(name, value.clone());
        }
        std::borrow::Cow::Owned(all)
    }

    /// The reply for a client, its headers as `metadata`.
    fn replay(&self, metadata: HeaderMap) -> Reply {
        Reply::complete(metadata, self.message.clone(), self.trailers.clone())
    }
}

/// What an entry counts against `max_bytes`: its key, message and headers.
fn weight(key: &[u8], reply: &StoredReply) -> usize {
    let fields: usize = reply
        .metadata
        .iter()
        .chain(reply.trailers.iter())
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    key.len() + reply.message.len() + fields
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Takes the call out of its slot, once.
fn take(slot: &std::sync::Mutex<Option<(Envelope, Next)>>) -> Option<(Envelope, Next)> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn pass(env: Envelope, mut next: Next) -> BoxFuture<'static, Result<Reply, GatewayError>> {
    Box::pin(async move { next.call(env).await })
}

/// The shared tier's value: a reply's headers, trailers and message in
/// one blob (`PC3`, when it was made, then for the headers and for the
/// trailers a count and each name and value with its length, then the
/// message).
mod shared_tier {
    use super::StoredReply;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// `stored_ms`: when the reply was made (stored, less the `Age` it
    /// arrived with), in Unix milliseconds, so
    /// another instance's hit carries its true `Age`.
    pub fn encode(reply: &StoredReply, stored_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(24 + reply.message.len());
        out.extend_from_slice(b"PC3");
        out.extend_from_slice(&stored_ms.to_be_bytes());
        for fields in [&reply.metadata, &reply.trailers] {
            out.extend_from_slice(&(fields.len() as u32).to_be_bytes());
            for (name, value) in fields {
                out.extend_from_slice(&(name.as_str().len() as u32).to_be_bytes());
                out.extend_from_slice(name.as_str().as_bytes());
                out.extend_from_slice(&(value.len() as u32).to_be_bytes());
                out.extend_from_slice(value.as_bytes());
            }
        }
        out.extend_from_slice(&reply.message);
        out
    }

    /// `None` for anything this version did not write (an older version's
    /// entries are misses, replaced as they are fetched again).
    pub fn decode(bytes: &[u8]) -> Option<(StoredReply, u64)> {
        let mut rest = bytes.strip_prefix(b"PC3")?;
        let mut take = |n: usize| -> Option<&[u8]> {
            if rest.len() < n {
                return None;
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Some(head)
        };
        let stored_ms = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let len = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let mut fields = [HeaderMap::new(), HeaderMap::new()];
        for map in &mut fields {
            let count = len(take(4)?);
            // More names than a header map holds is not something this wrote.
            if count > 1024 {
                return None;
            }
            for _ in 0..count {
                let n = len(take(4)?);
                let name = HeaderName::from_bytes(take(n)?).ok()?;
                let n = len(take(4)?);
                let value = HeaderValue::from_bytes(take(n)?).ok()?;
                map.append(name, value);
            }
        }
        let message = Bytes::copy_from_slice(take(0).map(|_| ())?.eq(&()).then_some(rest)?);
        let [metadata, trailers] = fields;
        let reply = StoredReply {
            metadata,
            message,
            trailers,
        };
        Some((reply, stored_ms))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_reply_survives_the_round_trip_and_garbage_does_not_decode() {
            let mut metadata = HeaderMap::new();
            metadata.append("x-a", HeaderValue::from_static("1"));
            metadata.append("x-a", HeaderValue::from_static("2"));
            metadata.insert("cache-control", HeaderValue::from_static("max-age=60"));
            let mut trailers = HeaderMap::new();
            trailers.append("x-a", HeaderValue::from_static("t"));
            let reply = StoredReply {
                metadata,
                message: Bytes::from_static(b"\x0a\x03abc"),
                trailers,
            };
            let (back, at) = decode(&encode(&reply, 1_764_720_000_123)).unwrap();
            assert_eq!(back, reply);
            assert_eq!(at, 1_764_720_000_123);
            assert!(decode(b"PC3\0\0\0\0\0\0\0\0\xff\xff\xff\xff").is_none());
            assert!(decode(b"PC2\0\0\0\0").is_none(), "an older version's entry");
            assert!(decode(b"nope").is_none());
            let full = encode(&reply, 0);
            assert!(decode(&full[..10]).is_none());
        }
    }
}

#[cfg(test)]
mod lifetime_tests {
    use super::*;

    fn reply(headers: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in headers {
            m.append(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn a_reply_a_shared_cache_may_not_keep_whole_is_not_kept_at_all() {
        for cc in [
            "private",
            "private=\"x-secret\", max-age=60",
            "Private=\"x-a, x-b\"",
            "no-cache=\"set-cookie\"",
            "max-age=60, no-store",
            "max-age=abc",
            "max-age=-5",
            "s-maxage=soon, max-age=60",
            // Unreadable: not stored rather than guessed at.
            "ext=\"\\\"\", private",
            "max-age=60, ext=\"open",
        ] {
            assert_eq!(
                backend_lifetime(&reply(&[("cache-control", cc)]), Duration::ZERO),
                Some(Duration::ZERO),
                "{cc}"
            );
        }
    }

    #[test]
    fn a_not_modified_or_partial_reply_is_not_kept_for_requests_without_its_conditions() {
        for status in ["304", " 206 ", "+206"] {
            let metadata = reply(&[("cache-control", "max-age=60"), ("x-http-status", status)]);
            assert_eq!(
                backend_lifetime(&metadata, Duration::ZERO),
                Some(Duration::ZERO)
            );
        }
        let created = reply(&[("cache-control", "max-age=60"), ("x-http-status", "203")]);
        assert_eq!(
            backend_lifetime(&created, Duration::ZERO),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn delta_seconds_past_what_a_number_holds_are_two_to_the_31st() {
        for (text, read) in [
            ("60", Some(60)),
            ("2147483649", Some(1 << 31)),
            ("18446744073709551616", Some(1 << 31)),
            ("99999999999999999999999", Some(1 << 31)),
            ("+5", None),
            ("-5", None),
            ("", None),
            ("1e3", None),
        ] {
            assert_eq!(delta_seconds(text), read, "{text}");
        }
        // A reply older than any max-age is not kept, however old it says.
        for age in ["100", "18446744073709551615", "18446744073709551616"] {
            let m = reply(&[("cache-control", "max-age=60"), ("age", age)]);
            assert_eq!(
                keep_for(&m, Duration::from_secs(300)).0,
                Duration::ZERO,
                "{age}"
            );
        }
        // A max-age past what a number holds is a long one, capped by the ttl.
        let m = reply(&[("cache-control", "max-age=18446744073709551616")]);
        assert_eq!(
            keep_for(&m, Duration::from_secs(300)).0,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn a_reply_that_arrives_aged_has_that_much_less_max_age_left() {
        let ttl = Duration::from_secs(300);
        let keep = |h: &[(&'static str, &str)]| {
            let (lifetime, age) = keep_for(&reply(h), ttl);
            (lifetime.as_secs(), age.as_secs())
        };
        // Its Age says it was kept 100 s: past a 60 s max-age.
        assert_eq!(
            keep(&[("cache-control", "max-age=60"), ("age", "100")]),
            (0, 100)
        );
        assert_eq!(
            keep(&[("cache-control", "max-age=60"), ("age", "50")]),
            (10, 50)
        );
        assert_eq!(
            keep(&[("cache-control", "s-maxage=60, max-age=5"), ("age", "50")]),
            (10, 50)
        );
        // Its Date is not read: a backend's clock would age every reply.
        assert_eq!(
            keep(&[
                ("cache-control", "max-age=60"),
                ("date", "Thu, 01 Jan 1970 00:00:00 GMT")
            ]),
            (60, 0)
        );
        // An Age past what a number holds is 2^31 s (RFC 9111 section
        // 1.2.2), older than any max-age: not kept.
        assert_eq!(
            keep(&[
                ("cache-control", "max-age=60"),
                ("age", "99999999999999999999")
            ])
            .0,
            0,
            "an Age too large to read is 2^31 s"
        );
        assert_eq!(keep(&[("age", "9999999999")]), (300, 1 << 31));
        // Without a lifetime of its own, the route's: its age is still told.
        assert_eq!(keep(&[("age", "7")]), (300, 7));
        assert_eq!(keep(&[]), (300, 0));
    }

    #[test]
    fn the_lifetime_is_s_maxage_else_max_age_else_expires() {
        let secs = |h: &[(&'static str, &str)]| {
            backend_lifetime(&reply(h), Duration::ZERO).map(|d| d.as_secs())
        };
        assert_eq!(
            secs(&[("cache-control", "max-age=60, s-maxage=30")]),
            Some(30)
        );
        assert_eq!(
            secs(&[("cache-control", "public, max-age=\"60\"")]),
            Some(60)
        );
        // A quoted comma does not end the directive it is in.
        assert_eq!(
            secs(&[("cache-control", "community=\"a, b\", max-age=5")]),
            Some(5)
        );
        assert_eq!(secs(&[]), None, "as the route says");
        // Expires is a point in time: what is left of it from now.
        let in_100s =
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(100));
        let left = secs(&[("expires", &in_100s)]).unwrap();
        assert!((98..=100).contains(&left), "{left}");
        for stale in ["Thu, 01 Jan 1970 00:00:00 GMT", "0", "tomorrow"] {
            assert_eq!(secs(&[("expires", stale)]), Some(0), "{stale}");
        }
        assert_eq!(
            secs(&[("cache-control", "max-age=60"), ("expires", "0")]),
            Some(60),
            "max-age wins over Expires"
        );
    }
}
