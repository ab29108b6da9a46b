//! Loading schemas at startup: FileDescriptorSet files, `.proto` sources
//! compiled in-process by protox, and gRPC server reflection read from
//! upstreams. The result is one [`DescriptorPool`]; everything after startup
//! works on descriptors resolved from it, never on names.
//!
//! The google.api and google.rpc files the gateway itself relies on are
//! built in, so users need not ship googleapis next to their protos.

pub mod config;

pub mod builtin;
pub mod http_rule;
pub mod reflection;

use crate::config::Config;
use prost::Message;
use prost_reflect::DescriptorPool;
use prost_types::FileDescriptorSet;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// A schema that cannot be loaded: where (file or upstream), which symbol, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// The config file and key that named the schema
    /// (`portico.toml: descriptors.protos[0]`), when one did.
    pub at: Option<String>,
    /// File path, proto file name or `upstream NAME`.
    pub source: String,
    /// The symbol or import at fault, when there is one.
    pub symbol: Option<String>,
    pub reason: String,
}

impl SchemaError {
    pub fn new(
        source: impl Into<String>,
        symbol: Option<String>,
        reason: impl Into<String>,
    ) -> Self {
        SchemaError {
            at: None,
            source: source.into(),
            symbol,
            reason: reason.into(),
        }
    }
}

impl SchemaError {
    /// The same error, named by the config `file` and `key` behind it.
    fn named_by(mut self, file: &str, key: String) -> Self {
        self.at = Some(format!("{file}: {key}"));
        self
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = &self.at {
            write!(f, "{at}: ")?;
        }
        match &self.symbol {
            Some(s) => write!(f, "{}: {}: {}", self.source, s, self.reason),
            None => write!(f, "{}: {}", self.source, self.reason),
        }
    }
}

impl std::error::Error for SchemaError {}

/// Loads every schema source of the config into one pool.
pub async fn load(config: &Config) -> Result<DescriptorPool, SchemaError> {
    let file = config.source.as_str();
    let mut pool = builtin::pool();
    for (i, path) in config.descriptors.sets.iter().enumerate() {
        add_set_file(&mut pool, path)
            .map_err(|e| e.named_by(file, format!("descriptors.sets[{i}]")))?;
    }
    if !config.descriptors.protos.is_empty() {
        let set = compile_protos(&config.descriptors.proto_paths, &config.descriptors.protos)
            .map_err(|(i, e)| e.named_by(file, format!("descriptors.protos[{i}]")))?;
        add_set(&mut pool, &set, "the compiled .proto files").map_err(|e| {
            // The listed file at fault, when it is one (not an import).
            let key = e
                .symbol
                .as_deref()
                .and_then(|f| {
                    // Listed by its name under an include path, or by a path
                    // to it (`proto/acme/v1/api.proto`, absolute).
                    let under = format!("/{f}");
                    config
                        .descriptors
                        .protos
                        .iter()
                        .position(|p| p == f || p.ends_with(&under))
                })
                .map_or("descriptors.protos".to_owned(), |i| {
                    format!("descriptors.protos[{i}]")
                });
            e.named_by(file, key)
        })?;
    }
    for (i, name) in config.descriptors.reflect.iter().enumerate() {
        let key = || format!("descriptors.reflect[{i}]");
        let upstream = config
            .upstreams
            .iter()
            .find(|u| &u.name == name)
            .ok_or_else(|| {
                SchemaError::new(format!("upstream {name}"), None, "no such upstream")
                    .named_by(file, key())
            })?;
        let set = reflection::fetch(upstream)
            .await
            .map_err(|e| e.named_by(file, key()))?;
        add_set(&mut pool, &set, &format!("reflection of upstream {name}"))
            .map_err(|e| e.named_by(file, key()))?;
    }
    Ok(pool)
}

/// What a file defines, for telling two copies of it apart: its package,
/// imports, messages with their fields (name, number, type), enums with
/// their values, and services with their methods. Comments, options and
/// what a compiler fills in (`json_name`) do not count.
fn shape(file: &prost_types::FileDescriptorProto) -> String {
    use std::fmt::Write as _;
    fn message(out: &mut String, m: &prost_types::DescriptorProto) {
        let _ = write!(out, "m {}{{", m.name());
        for f in &m.field {
            let _ = write!(
                out,
                "{} {} {:?} {:?} {} {:?};",
                f.name(),
                f.number(),
                f.r#type(),
                f.label(),
                f.type_name(),
                f.oneof_index
            );
        }
        for nested in &m.nested_type {
            message(out, nested);
        }
        for e in &m.enum_type {
            enumeration(out, e);
        }
        out.push('}');
    }
    fn enumeration(out: &mut String, e: &prost_types::EnumDescriptorProto) {
        let _ = write!(out, "e {}{{", e.name());
        for v in &e.value {
            let _ = write!(out, "{}={};", v.name(), v.number());
        }
        out.push('}');
    }
    let mut out = format!("{} {:?}", file.package(), file.dependency);
    for m in &file.message_type {
        message(&mut out, m);
    }
    for e in &file.enum_type {
        enumeration(&mut out, e);
    }
    for s in &file.service {
        let _ = write!(out, "s {}{{", s.name());
        for m in &s.method {
            let _ = write!(
                out,
                "{} {} {} {} {};",
                m.name(),
                m.input_type(),
                m.output_type(),
                m.client_streaming(),
                m.server_streaming()
            );
        }
        out.push('}');
    }
    out
}

/// Every message type a message of `desc` can hold, itself first, each
/// once (a recursive type ends the walk where it repeats): through its
/// message fields at any depth, a map's entry type included. What the
/// transcoder asks of a method's whole request or reply type (no map, no
/// well-known type...) is asked of each of these.
pub fn reachable_messages(
    desc: &prost_reflect::MessageDescriptor,
) -> Vec<prost_reflect::MessageDescriptor> {
    let mut found = vec![desc.clone()];
    let mut next = 0;
    while let Some(m) = found.get(next).cloned() {
        next += 1;
        for f in m.fields() {
            if let prost_reflect::Kind::Message(nested) = f.kind() {
                if !found.contains(&nested) {
                    found.push(nested);
                }
            }
        }
    }
    found
}

/// Reads a FileDescriptorSet file (as written by `protoc --include_imports -o`).
pub fn add_set_file(pool: &mut DescriptorPool, path: &Path) -> Result<(), SchemaError> {
    let source = path.display().to_string();
    let bytes = crate::config::read_file(path)
        .map_err(|e| SchemaError::new(&source, None, format!("cannot read: {e}")))?;
    add_set(pool, &bytes, &source)
}

/// Adds an encoded FileDescriptorSet to the pool. It is handed over as
/// bytes because decoding into `prost_types` would drop custom options such
/// as google.api.http. A file already present by name is skipped (the
/// built-in google.api files win over copies bundled in a set); a symbol
/// defined twice, an import missing from the set, or a file of the same
/// name that an earlier source defined with other messages, fields or
/// methods is an error.
pub fn add_set(pool: &mut DescriptorPool, bytes: &[u8], source: &str) -> Result<(), SchemaError> {
    let set = FileDescriptorSet::decode(bytes)
        .map_err(|e| SchemaError::new(source, None, format!("not a FileDescriptorSet: {e}")))?;
    // An empty file decodes as a set of nothing: said here, not later as a
    // route whose service is missing.
    if set.file.is_empty() {
        return Err(SchemaError::new(
            source,
            None,
            "holds no files: an empty descriptor set (write one with portico compile, or protoc --include_imports -o)",
        ));
    }
    // Two sources may well both carry a file (a set built with its imports,
    // reflection of a backend compiled from the same .proto); two sources
    // that disagree about it would leave the routes to whichever came
    // first, silently. The files the gateway holds compiled are its own,
    // whatever copy a source carries.
    let built_in = builtin::pool();
    for file in &set.file {
        if built_in.get_file_by_name(file.name()).is_some() {
            continue;
        }
        if let Some(known) = pool.get_file_by_name(file.name()) {
            if shape(known.file_descriptor_proto()) != shape(file) {
                return Err(SchemaError::new(
                    source,
                    Some(file.name().to_owned()),
                    "an earlier schema source defines this file with other messages, fields or \
                     methods (sources load in the order descriptors.sets, protos, reflect); \
                     keep one copy",
                ));
            }
        }
    }
    let files: Vec<_> = set
        .file
        .iter()
        .filter(|f| pool.get_file_by_name(f.name()).is_none())
        .collect();
    // Protobuf editions (`edition = "2023"`) are a third syntax the
    // schema reader does not take (it failed on them by panicking): said
    // per file, as any other schema error.
    if let Some(file) = files.iter().find(|f| f.syntax() == "editions") {
        return Err(SchemaError::new(
            source,
            Some(file.name().to_owned()),
            "is written in protobuf editions (edition = \"2023\" or later), which the gateway does not read: \
             write it as proto3 (or proto2), as most schemas still are",
        ));
    }
    // What protoc refuses, refused from every source (a backend's
    // reflection included), so what the gateway's own reflection passes on
    // is a schema any client's tools can build.
    if let Some(file) = files.iter().find(|f| !is_relative_name(f.name())) {
        return Err(SchemaError::new(
            source,
            Some(file.name().to_owned()),
            "is not a file name protobuf takes: a relative path of non-empty segments separated by `/`, with no `.` or `..` segment and no `\\`",
        ));
    }
    if let Some(cycle) = import_cycle(&files) {
        return Err(SchemaError::new(
            source,
            Some(cycle[0].clone()),
            format!("imports itself, through {}", cycle.join(" -> ")),
        ));
    }
    // Name a missing import precisely before the pool reports it less clearly.
    let names: std::collections::HashSet<&str> = files.iter().map(|f| f.name()).collect();
    for file in &files {
        for dep in &file.dependency {
            if !names.contains(dep.as_str()) && pool.get_file_by_name(dep).is_none() {
                return Err(SchemaError::new(
                    source,
                    Some(file.name().to_owned()),
                    format!("imports {dep:?}, which is not in the set (build it with --include_imports)"),
                ));
            }
        }
    }
    // The reader must never take the process down: a descriptor it trips
    // on is a schema error like any other (the pool is then dropped with
    // the failed load).
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pool.decode_file_descriptor_set(bytes)
    })) {
        Ok(added) => {
            added.map_err(|e| SchemaError::new(source, e.file().map(str::to_owned), e.to_string()))
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no reason given");
            Err(SchemaError::new(
                source,
                None,
                format!("the schema reader could not read this set ({why})"),
            ))
        }
    }
}

/// Whether `name` is a file name as protobuf writes them: a relative path
/// (`acme/v1/api.proto`), its segments non-empty and neither `.` nor `..`.
fn is_relative_name(name: &str) -> bool {
    !name.contains('\\')
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..")
}

/// The first import cycle among `files` (a file that imports itself,
/// directly or through others), as the file names around it, the first
/// repeated last. Files already in the pool import none of these, so a
/// cycle can only run through them.
fn import_cycle(files: &[&prost_types::FileDescriptorProto]) -> Option<Vec<String>> {
    let by_name: HashMap<&str, &prost_types::FileDescriptorProto> =
        files.iter().map(|f| (f.name(), *f)).collect();
    // 1: on the path being walked; 2: walked, no cycle through it.
    let mut state: HashMap<&str, u8> = HashMap::new();
    for start in files {
        let mut path: Vec<(&str, usize)> = vec![(start.name(), 0)];
        if state.contains_key(start.name()) {
            continue;
        }
        state.insert(start.name(), 1);
        while let Some(&(name, next)) = path.last() {
            let Some(dep) = by_name[name].dependency.get(next) else {
                state.insert(name, 2);
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            let dep = dep.as_str();
            if !by_name.contains_key(dep) {
                continue;
            }
            match state.get(dep) {
                Some(1) => {
                    let from = path.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        path[from..].iter().map(|(n, _)| (*n).to_owned()).collect();
                    cycle.push(dep.to_owned());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    state.insert(dep, 1);
                    path.push((dep, 0));
                }
            }
        }
    }
    None
}

/// Compiles `.proto` files with protox. Imports resolve against the include
/// paths, then the built-in google.api/google.rpc files, then protobuf's
/// well-known types.
/// Returns the encoded FileDescriptorSet (options intact), or the error
/// with the index in `protos` of the file being compiled.
pub fn compile_protos(
    proto_paths: &[impl AsRef<Path>],
    protos: &[String],
) -> Result<Vec<u8>, (usize, SchemaError)> {
    let mut chain = protox::file::ChainFileResolver::new();
    // protobuf's own files (google/protobuf/*.proto) are the compiler's,
    // whatever copy a folder holds: every runtime pins these types, and a
    // newer copy may use syntax the parser does not read yet.
    chain.add(protox::file::GoogleFileResolver::new());
    for p in proto_paths {
        chain.add(RegularFilesIn(p.as_ref().to_path_buf()));
    }
    chain.add(builtin::Resolver);
    let mut compiler = protox::Compiler::with_file_resolver(chain);
    compiler.include_imports(true);
    // Comments become the OpenAPI descriptions and MCP tool descriptions.
    compiler.include_source_info(true);
    for (i, name) in protos.iter().enumerate() {
        compiler
            .open_file(name)
            .map_err(|e| (i, protox_error(name, e, proto_paths)))?;
    }
    if let Some((file, symbol, reason)) = closed_enum_in_proto3(&compiler.file_descriptor_set()) {
        let i = protos.iter().position(|p| *p == file).unwrap_or(0);
        return Err((i, SchemaError::new(file, Some(symbol), reason)));
    }
    Ok(compiler.encode_file_descriptor_set())
}

/// A proto3 message field whose type is a closed enum (one defined in a
/// proto2 file), which protoc refuses and the compiler takes: proto3's
/// zero default may be no value of such an enum, and a closed enum drops
/// values it does not know where proto3 keeps them. The file, the field
/// and why.
fn closed_enum_in_proto3(set: &prost_types::FileDescriptorSet) -> Option<(String, String, String)> {
    use prost_types::{field_descriptor_proto::Type, DescriptorProto};
    fn enums(prefix: &str, messages: &[DescriptorProto], out: &mut Vec<String>) {
        for m in messages {
            let name = format!("{prefix}.{}", m.name());
            out.extend(m.enum_type.iter().map(|e| format!("{name}.{}", e.name())));
            enums(&name, &m.nested_type, out);
        }
    }
    fn field_of<'a>(
        prefix: &str,
        messages: &'a [DescriptorProto],
        closed: &[String],
    ) -> Option<(String, &'a str)> {
        messages.iter().find_map(|m| {
            let name = format!("{prefix}.{}", m.name());
            m.field
                .iter()
                .find(|f| {
                    f.r#type() == Type::Enum
                        && closed
                            .iter()
                            .any(|c| f.type_name().strip_prefix('.') == Some(c))
                })
                .map(|f| (format!("{name}.{}", f.name()), f.type_name()))
                .or_else(|| field_of(&name, &m.nested_type, closed))
        })
    }
    let package = |f: &prost_types::FileDescriptorProto| {
        if f.package().is_empty() {
            String::new()
        } else {
            format!(".{}", f.package())
        }
    };
    let mut closed = Vec::new();
    for f in set
        .file
        .iter()
        .filter(|f| matches!(f.syntax(), "" | "proto2"))
    {
        let prefix = package(f);
        closed.extend(f.enum_type.iter().map(|e| format!("{prefix}.{}", e.name())));
        enums(&prefix, &f.message_type, &mut closed);
    }
    for c in &mut closed {
        c.remove(0);
    }
    set.file
        .iter()
        .filter(|f| f.syntax() == "proto3")
        .find_map(|f| {
            let (field, enum_name) = field_of(&package(f), &f.message_type, &closed)?;
            let field = field.trim_start_matches('.').to_owned();
            Some((
                f.name().to_owned(),
                field,
                format!(
                    "its type {} is a closed enum (defined in a proto2 file), which a proto3 message cannot use (protoc refuses it too): proto3's default 0 may be none of its values",
                    enum_name.trim_start_matches('.')
                ),
            ))
        })
}

/// The name the compiler knows `file` by, when it is a path to a file inside
/// an include folder: its path under the first folder holding it (`None`
/// when it is inside none, or is not there). `Err` when an earlier folder
/// holds another file of that name, which the compiler would read instead:
/// protoc refuses such a file as shadowed, and so does the gateway.
pub fn name_inside(
    file: &Path,
    proto_paths: &[impl AsRef<Path>],
) -> Result<Option<String>, String> {
    let Ok(file) = file.canonicalize() else {
        return Ok(None);
    };
    let Some(name) = proto_paths.iter().find_map(|folder| {
        let folder = folder.as_ref().canonicalize().ok()?;
        let inside = file.strip_prefix(&folder).ok()?;
        let parts: Vec<String> = inside
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        Some(parts.join("/"))
    }) else {
        return Ok(None);
    };
    let first = proto_paths
        .iter()
        .map(|folder| folder.as_ref().join(&name))
        .find(|candidate| candidate.is_file());
    match first {
        Some(first) if first.canonicalize().ok().as_ref() != Some(&file) => Err(format!(
            "is shadowed by {}: an include folder listed earlier holds a file of the same name ({name}), which the compiler would read instead; rename one, or list the folders in another order",
            first.display()
        )),
        _ => Ok(Some(name)),
    }
}

/// `.proto` files in one include folder, as protox's own resolver finds
/// them, refusing what is not a regular file: protox opens a file before
/// it looks at it, and opening a named pipe waits for a writer, while
/// reading a device such as `/dev/zero` never ends.
struct RegularFilesIn(std::path::PathBuf);

impl protox::file::FileResolver for RegularFilesIn {
    fn resolve_path(&self, path: &Path) -> Option<String> {
        protox::file::IncludeFileResolver::new(self.0.clone()).resolve_path(path)
    }

    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        let path = self.0.join(name);
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(protox::Error::new(format!(
                "{name} ({}) is not a regular file (a pipe, socket, device or folder)",
                path.display()
            )));
        }
        protox::file::File::open(name, &path)
    }
}

/// The file, with the line and column of the fault when protox knows
/// them (`acme/x.proto:4:3`), and the reason.
fn protox_error(opened: &str, e: protox::Error, proto_paths: &[impl AsRef<Path>]) -> SchemaError {
    let mut file = e.file().unwrap_or(opened).to_owned();
    if let Some((line, column)) = location(&e) {
        file = format!("{file}:{line}:{column}");
    }
    let mut reason = e.to_string();
    // An option whose value does not read (`{ gett: "/v1" }` in a
    // google.api.http rule) is said as an "invalid value" only: why is in
    // the text parser's error beneath it.
    if let Some(why) = miette::Diagnostic::diagnostic_source(&e) {
        let why = why.to_string();
        if !reason.contains(&why) {
            reason = format!("{reason}: {why}");
        }
    }
    // The compiler says "not in any include path" both of a file that is
    // nowhere and of one outside every include folder.
    if reason.ends_with("is not in any include path") {
        let folders = proto_paths
            .iter()
            .map(|p| p.as_ref().display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        reason = if Path::new(opened).is_file() {
            format!("the file is outside every include folder ({folders}); put it in one, or add its folder to the include folders (proto_paths; -I for portico compile)")
        } else {
            format!("no such file: not in any include folder ({folders}), nor at that path")
        };
    }
    if reason.contains("found 'edition'") {
        reason.push_str(
            " (the file is written in protobuf editions, which the gateway does not read: write it as proto3 or proto2)",
        );
    }
    SchemaError::new(file, None, reason)
}

/// 1-based line and column of a diagnostic's first label (or of a related
/// diagnostic's, where protox puts a parse error's).
fn location(e: &dyn miette::Diagnostic) -> Option<(usize, usize)> {
    let here = || {
        let label = e.labels()?.next()?;
        let contents = e.source_code()?.read_span(label.inner(), 0, 0).ok()?;
        Some((contents.line() + 1, contents.column() + 1))
    };
    here().or_else(|| e.related()?.find_map(location))
}

#[cfg(test)]
mod tests;
