//! Aggregation: one request fans out to several unary calls, run
//! concurrently except where a call's request takes values from an earlier
//! call's reply, and the replies merge into one JSON object under the calls'
//! names. Each call is an ordinary envelope sent down the pipeline, so it
//! passes its own route's authentication, limits and cache.

use crate::config::OnError;
use crate::envelope::{Envelope, Payload, RequestCtx};
use crate::error::{ErrorKind, GatewayError, Origin};
use crate::policy::Pipeline;
use crate::routes::aggregate::config::{Reference, Source, TextPart, ValueTemplate};
use crate::routes::aggregate::AggregatePlan;
use crate::transcode::json;
use crate::transcode::response;
use crate::transcode::status::StatusRenderer;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::HeaderMap;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use tower::ServiceExt;

/// What a request brings to an aggregate's call templates.
#[derive(Debug, Default)]
pub struct AggregateInput {
    /// Path variables, decoded, by name.
    pub path: Vec<(String, String)>,
    /// Query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// The merged reply.
pub struct AggregateOutcome {
    pub body: Value,
    /// False when some call failed (partial mode only).
    pub complete: bool,
}

#[derive(Clone)]
pub struct Aggregator {
    pub pipeline: Pipeline,
    pub status: StatusRenderer,
}

type CallResult = Result<Arc<Value>, Arc<GatewayError>>;
type CallFuture = Shared<BoxFuture<'static, CallResult>>;

impl Aggregator {
    pub async fn run(
        &self,
        plan: &Arc<AggregatePlan>,
        input: AggregateInput,
        metadata: HeaderMap,
        ctx: RequestCtx,
    ) -> Result<AggregateOutcome, GatewayError> {
        let input = Arc::new(input);
        let mut calls: Vec<CallFuture> = Vec::with_capacity(plan.config.calls.len());
        for index in 0..plan.config.calls.len() {
            let deps: Vec<(usize, CallFuture)> = plan.config.calls[index]
                .depends_on
                .iter()
                .map(|&d| (d, calls[d].clone()))
                .collect();
            let call = CallRun {
                plan: plan.clone(),
                index,
                input: input.clone(),
                pipeline: self.pipeline.clone(),
                metadata: metadata.clone(),
                ctx: ctx.clone(),
            };
            calls.push(call.after(deps).boxed().shared());
        }

        let mut pending: FuturesUnordered<_> = calls
            .into_iter()
            .enumerate()
            .map(|(i, f)| f.map(move |r| (i, r)))
            .collect();
        let mut results: Vec<Option<CallResult>> = vec![None; plan.config.calls.len()];
        while let Some((i, result)) = pending.next().await {
            if let (OnError::Fail, Err(e)) = (plan.config.on_error, &result) {
                // A skipped call's own cause is also failing; report the cause.
                if !matches!(e.kind, ErrorKind::DependencyFailed { .. }) {
                    return Err(GatewayError::clone(e));
                }
            }
            results[i] = Some(result);
        }

        let mut merged = Map::new();
        let mut errors = Map::new();
        let mut first_failure = None;
        for (call, result) in plan.config.calls.iter().zip(results) {
            match result {
                Some(Ok(value)) => {
                    merged.insert(call.name.clone(), Arc::unwrap_or_clone(value));
                }
                Some(Err(e)) => {
                    // At the level of every protocol's failures: a
                    // client's refusal is no warning about the operator's systems.
                    crate::observe::failure_event!(e.origin, target: "portico::access", aggregate = %plan.config.path, call = %call.name, origin = e.origin.as_str(), error = e.message.as_str(), "aggregated call failed");
                    errors.insert(call.name.clone(), self.status.to_json(&e));
                    if first_failure.is_none()
                        && !matches!(e.kind, ErrorKind::DependencyFailed { .. })
                    {
                        first_failure = Some(e);
                    }
                }
                None => {}
            }
        }
        if merged.is_empty() {
            if let Some(e) = first_failure {
                // Nothing to show: the request failed as its first call did.
                return Err(GatewayError::clone(&e));
            }
        }
        let complete = errors.is_empty();
        if !complete {
            merged.insert("errors".to_owned(), Value::Object(errors));
        }
        Ok(AggregateOutcome {
            body: Value::Object(merged),
            complete,
        })
    }
}

/// One call of one request.
struct CallRun {
    plan: Arc<AggregatePlan>,
    index: usize,
    input: Arc<AggregateInput>,
    pipeline: Pipeline,
    metadata: HeaderMap,
    ctx: RequestCtx,
}

/// The field a refused request names, when what fills it in `template`
/// is a value of an earlier call's reply (`{a.bookCount}`): the field and
/// the reference as written.
fn mistyped_reply_value(
    template: &ValueTemplate,
    e: &GatewayError,
    input: &AggregateInput,
    replies: &[(usize, Arc<Value>)],
) -> Option<(String, usize, String)> {
    let field = e.kind.violations().first()?.field.clone();
    let mut at = template;
    for key in field.split('.').filter(|k| !k.is_empty()) {
        let (name, index) = match key.split_once('[') {
            Some((name, i)) => (name, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (key, None),
        };
        at = match at {
            ValueTemplate::Object(fields) => &fields.iter().find(|(k, _)| k == name)?.1,
            _ => return None,
        };
        if let Some(i) = index {
            at = match at {
                // The request's index counts only the items that had a
                // value; the template's counts every item.
                ValueTemplate::List(items) => items
                    .iter()
                    .filter(|item| render(item, input, replies).is_some())
                    .nth(i)?,
                _ => return None,
            };
        }
    }
    match at {
        ValueTemplate::Ref(Reference {
            source: Source::Call(from),
            keys,
        }) => Some((field, *from, keys.join("."))),
        _ => None,
    }
}

impl CallRun {
    /// Waits for the calls this one takes values from, then makes the call.
    async fn after(self, deps: Vec<(usize, CallFuture)>) -> CallResult {
        let mut replies = Vec::with_capacity(deps.len());
        for (d, dep) in deps {
            match dep.await {
                Ok(v) => replies.push((d, v)),
                Err(_) => {
                    let name = self.plan.config.calls[d].name.clone();
                    return Err(Arc::new(GatewayError::new(
                        ErrorKind::DependencyFailed { call: name.clone() },
                        Origin::Backend,
                        format!("not called: it needs the reply of {name}, which failed"),
                    )));
                }
            }
        }
        self.call(&replies).await.map(Arc::new).map_err(Arc::new)
    }

    async fn call(&self, replies: &[(usize, Arc<Value>)]) -> Result<Value, GatewayError> {
        let call = &self.plan.config.calls[self.index];
        let (target, json_options) = &self.plan.targets[self.index];
        let label = |e: GatewayError| {
            let message = format!(
                "{} ({}): {}",
                call.name,
                target.method.full_name(),
                e.message
            );
            e.with_message(message)
        };
        let mut request = render(&call.request, &self.input, replies)
            .map(Cow::into_owned)
            .unwrap_or_else(|| Value::Object(Map::new()));
        self.plan.type_url_values(self.index, &mut request);
        // Read as text, as a REST body is: a float at its limit (`3.4028235e38`)
        // is then taken as that float, as every protocol takes it.
        let text = serde_json::to_vec(&request).unwrap_or_default();
        let message = json::decode(&target.method.input(), &text, json_options)
            .map_err(json::without_position)
            .map_err(|e| match mistyped_reply_value(&call.request, &e, &self.input, replies) {
                // An earlier reply's value that the field cannot hold: the
                // aggregate's template is wrong, whatever the client sent.
                Some((field, from, keys)) => GatewayError::internal(format!(
                    "{} ({}): its request field {field} takes {{{}.{keys}}}, a value of that reply it cannot hold: {}; the aggregate's request template needs fixing",
                    call.name,
                    target.method.full_name(),
                    self.plan.config.calls[from].name,
                    e.kind
                        .violations()
                        .first()
                        .map_or(e.message.as_str(), |v| v.description.as_str())
                )),
                None => label(e),
            })?;
        let timeout = target.timeout.map_or(call.timeout, |t| t.min(call.timeout));
        // The client's own deadline bounds every call made for it, counted
        // from the aggregate request's arrival: a call that starts after
        // another's reply has only what is left of it.
        let timeout = match self.ctx.client_timeout {
            Some(client) => client
                .saturating_sub(self.ctx.started.elapsed())
                .min(timeout),
            None => timeout,
        };
        if super::no_time::given_no_time(&self.ctx) {
            return Err(label(GatewayError::deadline_given_no_time(
                "the backend was called",
            )));
        }
        if timeout.is_zero() {
            return Err(label(GatewayError::deadline_exceeded()));
        }
        let mut ctx = self.ctx.clone();
        ctx.aggregate_call = self.index;
        // Each call's deadline is its own, counted from when it starts,
        // and what is left of the client's is all the client gives it.
        ctx.started = std::time::Instant::now();
        if ctx.client_timeout.is_some() {
            ctx.client_timeout = Some(timeout);
        }
        let envelope = Envelope {
            target: target.clone(),
            metadata: self.metadata.clone(),
            payload: Payload::Unary(crate::transcode::map_order::encode_request(
                target, &message,
            )),
            timeout: Some(timeout),
            ctx,
        };
        let reply = async {
            let reply = self.pipeline.clone().oneshot(envelope).await?;
            reply.into_unary().await
        };
        // The egress enforces the deadline too; this bounds the policies' part.
        let (_, bytes) = tokio::time::timeout(timeout, reply)
            .await
            .map_err(|_| GatewayError::deadline_exceeded())
            .and_then(|r| r)
            .map_err(label)?;
        reply_json(&target.method.output(), &bytes, json_options).map_err(label)
    }
}

/// A call's reply as the JSON value the aggregate's answer holds. Written
/// as text first, as every protocol writes a reply: a `float` is its
/// shortest digits (`0.1`), which a JSON value made straight from the
/// message would widen (`0.10000000149011612`).
fn reply_json(
    output: &prost_reflect::MessageDescriptor,
    bytes: &[u8],
    json_options: &crate::config::JsonOptions,
) -> Result<Value, GatewayError> {
    let decoded = response::decode(output, bytes)?;
    let text = json::encode(&decoded, &json::serialize_options(json_options))
        .map_err(response::bad_reply)?;
    // As deep as the message, which decoding bounded (protobuf's 100
    // messages): JSON's own 128 levels would refuse a reply that a binding
    // writes (a repeated field of messages is two levels a message).
    let mut de = serde_json::Deserializer::from_slice(&text);
    de.disable_recursion_limit();
    serde::Deserialize::deserialize(&mut de).map_err(response::bad_reply)
}

/// Fills a template; `None` when it refers to something the request or the
/// replies do not have (the field is then left unset).
fn render<'a>(
    template: &'a ValueTemplate,
    input: &'a AggregateInput,
    replies: &'a [(usize, Arc<Value>)],
) -> Option<Cow<'a, Value>> {
    match template {
        ValueTemplate::Literal(v) => Some(Cow::Borrowed(v)),
        ValueTemplate::Ref(r) => resolve(r, input, replies),
        ValueTemplate::Text(parts) => {
            let mut out = String::new();
            for part in parts {
                match part {
                    TextPart::Literal(l) => out.push_str(l),
                    TextPart::Ref(r) => match resolve(r, input, replies)?.as_ref() {
                        Value::String(s) => out.push_str(s),
                        Value::Null => return None,
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Some(Cow::Owned(Value::String(out)))
        }
        ValueTemplate::Object(fields) => Some(Cow::Owned(Value::Object(
            fields
                .iter()
                .filter_map(|(k, t)| Some((k.clone(), render(t, input, replies)?.into_owned())))
                .collect(),
        ))),
        ValueTemplate::List(items) => Some(Cow::Owned(Value::Array(
            items
                .iter()
                .filter_map(|t| Some(render(t, input, replies)?.into_owned()))
                .collect(),
        ))),
    }
}

fn resolve<'a>(
    r: &'a Reference,
    input: &'a AggregateInput,
    replies: &'a [(usize, Arc<Value>)],
) -> Option<Cow<'a, Value>> {
    let root: &Value = match &r.source {
        Source::Path(name) => {
            let (_, v) = input.path.iter().find(|(n, _)| n == name)?;
            return Some(Cow::Owned(Value::String(v.clone())));
        }
        Source::Query(name) => {
            let (_, v) = input.query.iter().find(|(n, _)| n == name)?;
            return Some(Cow::Owned(Value::String(v.clone())));
        }
        Source::Body => input.body.as_ref()?,
        Source::Call(i) => replies.iter().find(|(d, _)| d == i)?.1.as_ref(),
    };
    let mut at = root;
    for key in &r.keys {
        at = match at {
            Value::Object(m) => m.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!at.is_null()).then_some(Cow::Borrowed(at))
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, Value as Field};

    /// A reply as deep as protobuf decodes, two JSON levels a message
    /// (a repeated field of messages), past JSON's 128: written whole, its
    /// floats in their shortest digits, as a binding writes them.
    #[test]
    fn a_deep_reply_is_written_whole_with_its_floats_shortest() {
        let dir = crate::scratch::ScratchDir::new("aggregate-deep");
        std::fs::write(
            dir.join("tree.proto"),
            "syntax = \"proto3\";\npackage tree;\nmessage Node { repeated Node children = 1; float weight = 2; }\n",
        )
        .unwrap();
        let set = crate::descriptors::compile_protos(&[&dir], &["tree.proto".to_owned()]).unwrap();
        let pool = prost_reflect::DescriptorPool::decode(set.as_slice()).unwrap();
        let node = pool.get_message_by_name("tree.Node").unwrap();
        let mut tree = DynamicMessage::new(node.clone());
        tree.set_field_by_name("weight", Field::F32(0.1));
        for _ in 0..90 {
            let mut parent = DynamicMessage::new(node.clone());
            parent.set_field_by_name("children", Field::List(vec![Field::Message(tree)]));
            tree = parent;
        }
        let json = super::reply_json(&node, &tree.encode_to_vec(), &Default::default()).unwrap();
        let mut at = &json;
        for _ in 0..90 {
            at = &at["children"][0];
        }
        assert_eq!(at["weight"].to_string(), "0.1");
        std::fs::remove_dir_all(dir).ok();
    }
}
