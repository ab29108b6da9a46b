//! The tools `/mcp` offers: every unary and server-streaming method of the
//! routes with `mcp = true`, with input and output JSON Schemas from the same
//! generator as the OpenAPI description.

use crate::envelope::Target;
use crate::openapi::comments::Comments;
use crate::openapi::schema::{Naming, Schemas};
use crate::routes::{Binding, RouteTable};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// One tool: a method, called with its whole request message as arguments.
pub struct Tool {
    pub name: String,
    /// How the arguments become the request message: the method's
    /// `POST /package.Service/Method` mapping, body `*`.
    pub binding: Arc<Binding>,
    /// `tools/list`'s entry for it.
    pub listing: Value,
    /// The method's first binding (its rule's own pattern, before any
    /// `additional_bindings`), when that is a PATCH with an `update_mask`:
    /// arguments without a mask get the one REST would fill.
    pub patch: Option<Arc<Binding>>,
}

#[derive(Default)]
pub struct ToolTable {
    tools: BTreeMap<String, Tool>,
    /// What an operator should know of the table: methods of `mcp = true`
    /// routes that are not tools and why, tools renamed for a name taken
    /// (`serve` logs them as warnings, `check` prints them).
    pub warnings: Vec<String>,
}

impl ToolTable {
    pub fn build(routes: &RouteTable, mcp_routes: &[bool]) -> ToolTable {
        let mut targets: Vec<&Arc<Target>> = routes
            .targets()
            .filter(|t| mcp_routes.get(t.route).copied().unwrap_or(false))
            .collect();
        targets.sort_by(|a, b| a.path.as_str().cmp(b.path.as_str()));
        let mut table = ToolTable::default();
        // A tool call is one request and one result.
        targets.retain(|t| {
            if t.kind.client_streams() {
                table.warnings.push(format!(
                    "{} is not offered as an MCP tool: it streams from the client",
                    t.path
                ));
            }
            !t.kind.client_streams()
        });
        // `Service_Method`, unless two services offered as tools share a
        // simple name.
        let mut services: HashMap<String, BTreeSet<String>> = HashMap::new();
        for t in &targets {
            let service = t.method.parent_service();
            services
                .entry(service.name().to_owned())
                .or_default()
                .insert(service.full_name().to_owned());
        }
        let mut comments = Comments::default();
        let mut offered: Vec<Tool> = Vec::new();
        for t in targets {
            let service = t.method.parent_service();
            let shared = services.get(service.name()).is_some_and(|s| s.len() > 1);
            let name = if shared {
                format!(
                    "{}_{}",
                    service.full_name().replace('.', "_"),
                    t.method.name()
                )
            } else {
                format!("{}_{}", service.name(), t.method.name())
            };

            let json = routes.json_options(t.route);
            let Ok(binding) = Binding::new(
                t.clone(),
                http::Method::POST,
                t.path.as_str(),
                "*",
                "",
                json,
                true,
            ) else {
                continue;
            };
            if binding.raw_request_body {
                // Tool arguments are JSON; a request of raw bytes has no JSON form.
                table.warnings.push(format!(
                    "{} is not offered as an MCP tool: its request body is google.api.HttpBody (raw bytes)",
                    t.path
                ));
                continue;
            }
            let n = Naming::from(&json);
            let Some(input) = object_schema(&mut comments, &t.method.input(), n) else {
                table.warnings.push(format!(
                    "{} is not offered as an MCP tool: its request is not a JSON object (a well-known type written as a string or a value)",
                    t.path
                ));
                continue;
            };
            // Raw replies are content items, not structured content.
            let output = (!binding.raw_response_body)
                .then(|| object_schema(&mut comments, &t.method.output(), n))
                .flatten()
                .map(|o| {
                    if t.kind.server_streams() {
                        let mut items = o;
                        let defs = items.as_object_mut().and_then(|m| m.remove("$defs"));
                        let mut s = json!({
                            "type": "object",
                            "properties": {
                                "messages": { "type": "array", "items": items },
                                "truncated": { "type": "boolean" },
                            },
                            "required": ["messages"],
                        });
                        if let Some(defs) = defs {
                            s["$defs"] = defs;
                        }
                        s
                    } else {
                        o
                    }
                });
            let mut description = comments
                .get(&t.method.parent_file(), t.method.path())
                .map(str::to_owned)
                .unwrap_or_else(|| format!("Calls {}.", t.path));
            if t.kind.server_streams() {
                description.push_str(&format!(
                    "\n\nStreams: the result holds every reply under `messages` (at most {MAX_STREAM_MESSAGES}; `truncated` when there were more)."
                ));
            }
            let mut listing = json!({
                "name": name,
                "title": format!("{}.{}", service.name(), t.method.name()),
                "description": description,
                "inputSchema": input,
            });
            if let Some(o) = output {
                listing["outputSchema"] = o;
            }
            // The method's own rule decides, not an `additional_bindings`
            // entry: a method created by `POST body: "*"` that may also be
            // patched at another URL is called as a whole message.
            let patch = routes
                .bindings()
                .iter()
                .find(|b| b.target.path == t.path && !b.auto)
                .filter(|b| b.update_mask.is_some())
                .cloned();
            offered.push(Tool {
                name,
                binding: Arc::new(binding),
                listing,
                patch,
            });
        }
        // Names that still meet (`a.b_c.Svc/M` and `a_b.c.Svc/M`, or
        // `Foo_Bar/Baz` and `Foo/Bar_Baz`): each such method gets a suffix
        // that depends on its own gRPC path only, so a name never moves to
        // another method when routes come and go.
        let mut uses: HashMap<String, usize> = HashMap::new();
        for tool in &offered {
            *uses.entry(tool.name.clone()).or_default() += 1;
        }
        for mut tool in offered {
            if uses[&tool.name] > 1 {
                use sha2::Digest as _;
                let path = tool.binding.target.path.to_string();
                let digest = sha2::Sha256::digest(path.as_bytes());
                let suffix: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
                let renamed = format!("{}_{suffix}", tool.name);
                table.warnings.push(format!(
                    "{path} is offered as the MCP tool {renamed}: its name {} is another method's too",
                    tool.name
                ));
                tool.listing["name"] = json!(renamed);
                tool.name = renamed;
            }
            table.tools.insert(tool.name.clone(), tool);
        }
        if table.tools.is_empty() && mcp_routes.contains(&true) {
            table.warnings.push(
                "no method of the routes with mcp = true is a tool: /mcp is not served".to_owned(),
            );
        }
        table
    }

    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// The `[[routes]]` entries whose methods are tools.
    pub fn routes(&self) -> impl Iterator<Item = usize> + '_ {
        let mut seen = BTreeSet::new();
        self.tools
            .values()
            .map(|t| t.binding.target.route)
            .filter(move |r| seen.insert(*r))
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn listing(&self) -> Value {
        json!(self.tools.values().map(|t| &t.listing).collect::<Vec<_>>())
    }
}

/// How many replies of a server stream one tool result holds.
pub const MAX_STREAM_MESSAGES: usize = 1000;

/// A message's schema as a self-contained JSON object schema (`$defs`
/// inside), or `None` when its JSON form is not an object.
fn object_schema(
    comments: &mut Comments,
    message: &prost_reflect::MessageDescriptor,
    n: Naming,
) -> Option<Value> {
    let mut schemas = Schemas::new("#/$defs/", comments);
    let mut root = schemas.message_body(message, n);
    if root.get("type") != Some(&json!("object")) {
        return None;
    }
    let defs = schemas.into_defs();
    if !defs.is_empty() {
        root["$defs"] = json!(defs);
    }
    Some(root)
}
