//! The description of a service with every field kind, read back as a
//! client author would: names, types, oneofs, comments, errors, security.

use super::{generate, Sources};
use crate::config::Config;
use crate::routes::aggregate::AggregateTable;
use crate::routes::RouteTable;
use serde_json::Value;
use std::path::Path;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"

[descriptors]
protos = ["kinds.proto"]
proto_paths = ["."]

[upstreams.things]
endpoints = ["127.0.0.1:9"]

[authenticators.hs]
algorithm = "HS256"
secret = "a-secret-long-enough-for-hs256-keys"
cookie = "session"

[authenticators.keys]
kind = "api_key"
header = "x-api-key"
query_param = "key"
keys_file = "../api_keys.toml"

[[routes]]
grpc_service = "kinds.v1.Things"
upstream = "things"
auth = ["hs", "keys"]
rate_limit = { requests_per_second = 10, burst = 10 }
"#;

fn spec(config_text: &str) -> Value {
    spec_of(config_text, &["kinds.proto"])
}

fn spec_of(config_text: &str, protos: &[&str]) -> Value {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openapi");
    let config = Config::from_str_in(config_text, "kinds.toml", &dir).expect("valid config");
    let protos: Vec<String> = protos.iter().map(|p| (*p).to_owned()).collect();
    let set = crate::descriptors::compile_protos(&[&dir], &protos).expect("the protos compile");
    let mut pool = crate::descriptors::builtin::pool();
    crate::descriptors::add_set(&mut pool, &set, "kinds.proto").expect("adds");
    let routes = RouteTable::build(&config, &pool).expect("routes");
    let aggregates = AggregateTable::build(&config, &routes).expect("aggregates");
    generate(&Sources {
        config: &config,
        routes: &routes,
        aggregates: &aggregates,
        digest: "0123456789abcdef",
    })
}

fn thing(s: &Value) -> &Value {
    &s["components"]["schemas"]["kinds.v1.Thing"]
}

#[test]
fn every_field_kind_is_described_under_its_json_name() {
    let s = spec(CONFIG);
    assert_eq!(s["openapi"], "3.1.0");
    assert_eq!(s["info"]["version"], "0123456789ab");
    let p = &thing(&s)["properties"];
    assert_eq!(p["doubleValue"]["anyOf"][0]["type"], "number");
    assert_eq!(p["doubleValue"]["anyOf"][1]["enum"][0], "NaN");
    // A float past the largest is refused: the schema says where that is.
    assert_eq!(p["floatValue"]["anyOf"][0]["maximum"], 3.4028235e38);
    assert_eq!(p["floatValue"]["anyOf"][0]["minimum"], -3.4028235e38);
    assert!(p["doubleValue"]["anyOf"][0]["maximum"].is_null());
    assert_eq!(p["int32Value"]["format"], "int32");
    assert_eq!(p["int64Value"]["type"], "string");
    assert_eq!(p["int64Value"]["format"], "int64");
    assert_eq!(p["uint64Value"]["format"], "uint64");
    assert_eq!(p["uint32Value"]["minimum"], 0);
    assert_eq!(p["bytesValue"]["contentEncoding"], "base64");
    assert_eq!(p["boolValue"]["type"], "boolean");
    assert_eq!(p["color"]["$ref"], "#/components/schemas/kinds.v1.Color");
    assert_eq!(p["tags"]["type"], "array");
    assert_eq!(p["counts"]["additionalProperties"]["type"], "integer");
    assert_eq!(p["children"]["propertyNames"]["pattern"], "^-?[0-9]+$");
    assert_eq!(p["parent"]["$ref"], "#/components/schemas/kinds.v1.Thing");
    assert_eq!(p["createTime"]["format"], "date-time");
    assert!(p["ttl"]["pattern"].as_str().unwrap().ends_with("s$"));
    assert_eq!(p["mask"]["type"], "string");
    assert_eq!(p["attributes"]["type"], "object");
    assert_eq!(p["list"]["type"], "array");
    assert_eq!(p["details"]["required"][0], "@type");
    // A type URL, as a request's `@type` must be (a bare name is a 400).
    assert_eq!(
        p["details"]["properties"]["@type"]["pattern"],
        "/[A-Za-z_][A-Za-z0-9_.]*$"
    );
    assert_eq!(p["nickname"]["type"], serde_json::json!(["string", "null"]));
    assert_eq!(p["big"]["type"], serde_json::json!(["string", "null"]));
    assert_eq!(p["legacy"]["deprecated"], true);
    // The oneof allows one member or none; proto3 `optional` is no oneof.
    let oneof = thing(&s)["oneOf"].as_array().unwrap();
    assert_eq!(oneof.len(), 3);
    assert_eq!(oneof[0]["required"][0], "person");
    assert_eq!(thing(&s)["x-oneof"], "owner");
    assert!(p["owner"].is_null());
    let color = &s["components"]["schemas"]["kinds.v1.Color"];
    assert_eq!(
        color["anyOf"][0]["enum"],
        serde_json::json!(["COLOR_UNSPECIFIED", "BLUE", "RED"])
    );
    assert_eq!(
        color["anyOf"][1]["type"], "integer",
        "unknown values are numbers"
    );
    assert!(color["description"]
        .as_str()
        .unwrap()
        .contains("`BLUE` (1): Like the sky."));
    assert_eq!(
        thing(&s)["description"],
        "A thing, with one field of every kind."
    );
}

#[test]
fn json_options_change_names_and_enum_forms() {
    let text = CONFIG.replace(
        "rate_limit = { requests_per_second = 10, burst = 10 }",
        "json = { use_proto_names = true, enums_as_numbers = true }",
    );
    let s = spec(&text);
    let t = &s["components"]["schemas"]["kinds.v1.Thing_proto_names_enum_numbers"];
    assert!(t["properties"]["int64_value"].is_object(), "{t}");
    let numbers = &s["components"]["schemas"]["kinds.v1.Color_numbers"];
    assert_eq!(numbers["type"], "integer");
    assert_eq!(numbers["x-enum-names"]["1"], "BLUE");
}

#[test]
fn bindings_become_paths_with_parameters_bodies_and_replies() {
    let s = spec(CONFIG);
    let paths = &s["paths"];
    // Literals of a variable stay in the path; each wildcard is a parameter.
    let get = &paths["/v1/things/{things_id}"]["get"];
    assert_eq!(get["operationId"], "kinds.v1.Things.GetThing");
    assert_eq!(get["summary"], "Reads one thing.");
    assert_eq!(get["x-grpc-method"], "/kinds.v1.Things/GetThing");
    assert_eq!(get["parameters"][0]["name"], "things_id");
    assert_eq!(get["parameters"][0]["schema"]["pattern"], "^[^/]+$");
    assert!(get["parameters"][0]["description"]
        .as_str()
        .unwrap()
        .contains("`things/{things_id}`"));
    // Unbound fields are query parameters.
    assert_eq!(get["parameters"][1]["name"], "id");
    assert_eq!(
        paths["/v1/by-id/{id}"]["get"]["operationId"],
        "kinds.v1.Things.GetThing_2"
    );
    let list = paths["/v1/things"]["get"]["parameters"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "pageSize",
            "colors",
            "filter.text",
            "filter.nested.text",
            "since",
            "minSize",
            "nothing"
        ]
    );
    assert_eq!(list[1]["schema"]["type"], "array");
    // A query cannot carry JSON's null: a NullValue is given by its name.
    assert_eq!(
        list[6]["schema"],
        serde_json::json!({"type": "string", "enum": ["NULL_VALUE"]})
    );
    assert_eq!(list[1]["explode"], true);
    // Nor a wrapper's null: an absent parameter is the unset wrapper.
    assert_eq!(list[5]["schema"]["type"], "integer", "{}", list[5]);
    let create = &paths["/v1/things"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/kinds.v1.Thing"
    );
    // An empty body is the empty message: the body may be left out.
    assert_eq!(create["requestBody"]["required"], false);
    assert_eq!(create["parameters"][0]["name"], "parent");
    // Dotted variables get placeholder names; custom verbs stay in the path.
    let rename = &paths["/v1/{thing_name}:rename"]["post"];
    assert_eq!(rename["parameters"][0]["name"], "thing_name");
    assert!(rename["parameters"][0]["description"]
        .as_str()
        .unwrap()
        .contains("`thing.name`"));
    let name_only = &paths["/v1/things/{things_id}/name"]["get"]["responses"]["200"];
    assert_eq!(
        name_only["content"]["application/json"]["schema"]["type"],
        "string"
    );
    let picture = &paths["/v1/things/{things_id}/picture"]["get"]["responses"]["200"];
    assert!(picture["content"]["*/*"].is_object());
    let watch = &paths["/v1/things:watch"]["get"]["responses"]["200"]["content"];
    assert_eq!(
        watch["application/x-ndjson"]["schema"]["properties"]["result"]["$ref"],
        "#/components/schemas/kinds.v1.Thing"
    );
    assert_eq!(
        watch["text/event-stream"]["schema"]["properties"]["data"]["contentSchema"]["$ref"],
        "#/components/schemas/kinds.v1.Thing"
    );
    // A method OpenAPI cannot name is kept under an extension.
    let old = &paths["/v1/old/{name}"]["x-method-LOOKUP"];
    assert_eq!(old["deprecated"], true);
    // The automatic mapping, for methods with and without rules.
    assert!(paths["/kinds.v1.Things/Purge"]["post"].is_object());
    assert!(paths["/kinds.v1.Things/GetThing"]["post"].is_object());
}

/// A path that sets a oneof member leaves the oneof's other members out
/// of the query parameters: the gateway would refuse every one of them.
#[test]
fn a_oneof_member_bound_by_the_path_keeps_its_siblings_out_of_the_query() {
    let config = CONFIG.replace(
        "upstream = \"things\"\n",
        "upstream = \"things\"\nhttp_rules.RenameThing = { get = \"/v1/owners/{thing.person}\" }\n",
    );
    assert_ne!(config, CONFIG);
    let s = spec(&config);
    let params = s["paths"]["/v1/owners/{thing_person}"]["get"]["parameters"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", s["paths"]));
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "thing_person");
    assert!(!names.contains(&"thing.team"), "{names:?}");
    assert!(names.contains(&"thing.note"), "{names:?}");
    assert!(names.contains(&"newName"), "{names:?}");
}

#[test]
fn policies_add_their_errors_and_security_schemes() {
    let s = spec(CONFIG);
    let op = &s["paths"]["/v1/things"]["get"];
    for status in ["400", "401", "403", "429", "default"] {
        assert!(op["responses"][status].is_object(), "{status}: {op}");
    }
    let security: Vec<String> = op["security"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_object().unwrap().keys().cloned())
        .collect();
    assert_eq!(security, ["hs", "hs_cookie", "keys", "keys_query"]);
    let schemes = &s["components"]["securitySchemes"];
    assert_eq!(schemes["hs"]["scheme"], "bearer");
    assert_eq!(schemes["hs_cookie"]["in"], "cookie");
    assert_eq!(schemes["keys"]["name"], "x-api-key");
    assert_eq!(schemes["keys_query"]["in"], "query");
    let status = &s["components"]["schemas"]["google.rpc.Status"];
    assert_eq!(status["properties"]["code"]["type"], "integer");
}

#[test]
fn an_aggregate_asks_for_what_every_call_route_takes() {
    let aggregate = r#"
[[aggregates]]
path = "/v1/things/{id}/with-owner"

[[aggregates.calls]]
name = "thing"
method = "kinds.v1.Things/GetThing"
request = { id = "{path.id}" }

[[aggregates.calls]]
name = "owner"
method = "kinds.v1.Owners/GetOwner"
request = { id = "{path.id}" }
"#;
    let requirements = |owners_auth: &str| -> Vec<Vec<String>> {
        let text = format!(
            "{CONFIG}\n[[routes]]\ngrpc_service = \"kinds.v1.Owners\"\nupstream = \"things\"\n{owners_auth}\n{aggregate}"
        );
        let s = spec_of(&text, &["kinds.proto", "owners.proto"]);
        let op = &s["paths"]["/v1/things/{id}/with-owner"]["get"];
        assert!(op.is_object(), "{}", s["paths"]);
        op["security"]
            .as_array()
            .map(|alternatives| {
                alternatives
                    .iter()
                    .map(|r| r.as_object().unwrap().keys().cloned().collect())
                    .collect()
            })
            .unwrap_or_default()
    };
    // A route without auth asks nothing more: the other route's schemes.
    assert_eq!(
        requirements(""),
        [["hs"], ["hs_cookie"], ["keys"], ["keys_query"]]
    );
    // Both routes take `keys`: an API key alone satisfies both.
    assert_eq!(
        requirements("auth = [\"keys\"]"),
        [["keys"], ["keys_query"]]
    );
    // No authenticator in common: one credential for each route, together.
    let text = format!(
        "{CONFIG}\n[authenticators.others]\nkind = \"api_key\"\nheader = \"x-other-key\"\nkeys_file = \"../api_keys.toml\"\n\n[[routes]]\ngrpc_service = \"kinds.v1.Owners\"\nupstream = \"things\"\nauth = \"others\"\n{aggregate}"
    );
    let s = spec_of(&text, &["kinds.proto", "owners.proto"]);
    let op = &s["paths"]["/v1/things/{id}/with-owner"]["get"];
    let together: Vec<Vec<String>> = op["security"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_object().unwrap().keys().cloned().collect())
        .collect();
    assert_eq!(
        together,
        [
            ["hs", "others"],
            ["hs_cookie", "others"],
            ["keys", "others"],
            ["keys_query", "others"]
        ]
    );
    assert_eq!(
        s["components"]["securitySchemes"]["others"]["name"],
        "x-other-key"
    );
}

/// A proto2 schema: its closed enums take only their declared names and
/// numbers in a path or query (as the gateway reads them there), any
/// number in a JSON body; an extension is a property named as the JSON
/// mapping names it.
#[test]
fn a_closed_enum_in_the_url_and_an_extension_are_described_as_read() {
    let text = CONFIG.replace("kinds.v1.Things", "legacy.v1.Shelves");
    let s = spec_of(&text, &["legacy.proto"]);
    let get = &s["paths"]["/legacy/{color}"]["get"];
    let params = get["parameters"].as_array().unwrap();
    let param = |name: &str| {
        params
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no parameter {name}: {params:?}"))
    };
    for schema in [&param("color")["schema"], &param("also")["schema"]["items"]] {
        assert_eq!(
            schema["anyOf"][0]["enum"],
            serde_json::json!(["RED", "BLUE"]),
            "{schema}"
        );
        assert_eq!(
            schema["anyOf"][1]["enum"],
            serde_json::json!([1, 5]),
            "{schema}"
        );
    }
    let query = &s["components"]["schemas"]["legacy.v1.Query"];
    let ext = &query["properties"]["[legacy.v1.origin_tag]"];
    assert_eq!(ext["type"], "string", "{query}");
    assert_eq!(ext["description"], "Where the query came from.");
    // In a body the enum is the named schema, which takes any number.
    let color = &s["components"]["schemas"]["legacy.v1.Color"];
    assert_eq!(color["anyOf"][1]["type"], "integer", "{color}");
    assert!(color["anyOf"][1].get("enum").is_none(), "{color}");
}

#[test]
fn one_resource_under_two_templates_is_one_path_item() {
    let text = CONFIG.replace("kinds.v1.Things", "legacy.v1.Shelves");
    let s = spec_of(&text, &["legacy.proto"]);
    let paths = s["paths"].as_object().unwrap();
    let under_g: Vec<&String> = paths
        .keys()
        .filter(|k| k.starts_with("/legacy/g/"))
        .collect();
    assert_eq!(
        under_g.len(),
        1,
        "one path item for /legacy/g/*: {under_g:?}"
    );
    let item = &paths[under_g[0]];
    let (take, drop) = (&item["get"], &item["delete"]);
    assert_eq!(take["operationId"], "legacy.v1.Shelves.Take");
    assert_eq!(drop["operationId"], "legacy.v1.Shelves.Drop");
    // Each operation names the path's one placeholder.
    let placeholder = under_g[0]
        .trim_start_matches("/legacy/g/{")
        .trim_end_matches('}');
    for op in [take, drop] {
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "path")
            .collect();
        assert_eq!(params.len(), 1, "{op}");
        assert_eq!(params[0]["name"], placeholder, "{op}");
    }
    // The variable spanning `g/*` still says the method receives it whole.
    let spanning = drop["parameters"][0]["description"].as_str().unwrap();
    assert!(
        spanning.contains(&format!("`g/{{{placeholder}}}`")),
        "{spanning}"
    );
}

#[test]
fn made_up_names_never_take_a_name_the_schemas_already_use() {
    let text = r#"
[server]
listen = "127.0.0.1:0"

[descriptors]
protos = ["names.proto"]
proto_paths = ["."]

[upstreams.things]
endpoints = ["127.0.0.1:9"]

[[routes]]
grpc_service = "names.v1.Shelf"
upstream = "things"
methods = ["Get"]
json = { use_proto_names = true }

[[routes]]
grpc_service = "names.v1.Shelf"
upstream = "things"
methods = ["Get_2"]

[[routes]]
grpc_service = "names.v1.Shelf"
upstream = "things"
methods = ["Get_3"]
json = { use_proto_names = true, enums_as_numbers = true }

[[routes]]
grpc_service = "names.v1.Shelf"
upstream = "things"
methods = ["Get_4"]
json = { enums_as_numbers = true }
"#;
    let s = spec_of(text, &["names.proto"]);
    let mut ids: Vec<&str> = Vec::new();
    for item in s["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            ids.push(op["operationId"].as_str().unwrap());
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "every operationId its own: {ids:?}"
    );
    // `Get`'s second binding skips the numbers the methods `Get_2`,
    // `Get_3` and `Get_4` take.
    assert_eq!(
        s["paths"]["/names/b/{book_title}"]["get"]["operationId"],
        "names.v1.Shelf.Get_5"
    );
    assert_eq!(
        s["paths"]["/names/c/{other_field}"]["get"]["operationId"],
        "names.v1.Shelf.Get_2"
    );
    // `Book` under proto names is not the message `Book_proto_names`.
    let schemas = &s["components"]["schemas"];
    assert!(
        schemas["names.v1.Book__proto_names"]["properties"]["book_title"].is_object(),
        "{schemas}"
    );
    assert!(
        schemas["names.v1.Book_proto_names"]["properties"]["otherField"].is_object(),
        "{schemas}"
    );
    // Two made-up names that would be one: each type keeps its own schema.
    let refs = |path: &str| {
        s["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (both, numbers) = (
        refs("/names/d/{book_title}"),
        refs("/names/e/{other_field}"),
    );
    assert_ne!(both, numbers, "{}", s["paths"]);
    let body = |r: &str| &schemas[r.trim_start_matches("#/components/schemas/")];
    assert!(
        body(&both)["properties"]["book_title"].is_object(),
        "{both}: {schemas}"
    );
    assert!(
        body(&numbers)["properties"]["otherField"].is_object(),
        "{numbers}: {schemas}"
    );
}

#[test]
fn a_binding_an_aggregate_answers_instead_takes_no_operation_number() {
    // The aggregate takes `GET /v1/by-id/{id}`, GetThing's second binding.
    let text = format!(
        "{CONFIG}\n[[aggregates]]\npath = \"/v1/by-id/{{thing}}\"\n\n[[aggregates.calls]]\nname = \"thing\"\nmethod = \"kinds.v1.Things/GetThing\"\nrequest = {{ id = \"{{path.thing}}\" }}\n"
    );
    let s = spec_of(&text, &["kinds.proto"]);
    let by_id = &s["paths"]["/v1/by-id/{thing}"]["get"];
    assert_eq!(
        by_id["operationId"], "aggregate GET /v1/by-id/{thing}",
        "{by_id}"
    );
    assert!(
        s["paths"]["/v1/by-id/{id}"].is_null(),
        "one path item for one resource"
    );
    // The automatic mapping is GetThing's second operation described.
    assert_eq!(
        s["paths"]["/kinds.v1.Things/GetThing"]["post"]["operationId"],
        "kinds.v1.Things.GetThing_2"
    );
}

#[test]
fn a_rest_of_path_variable_is_another_resource_than_one_segments() {
    let text = CONFIG.replace(
        "auth = [\"hs\", \"keys\"]",
        "auth = [\"hs\", \"keys\"]\nhttp_rules.GetThing = { get = \"/r/{name}\", additional_bindings = [{ get = \"/r/{name=**}\" }] }",
    );
    let s = spec_of(&text, &["kinds.proto"]);
    let under_r: Vec<&String> = s["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("/r/"))
        .collect();
    assert_eq!(
        under_r.len(),
        2,
        "one segment and the rest of the path: {under_r:?}"
    );
    for path in under_r {
        assert!(s["paths"][path]["get"].is_object(), "{path}");
    }
}
