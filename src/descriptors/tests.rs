use super::*;

#[test]
fn the_built_in_set_is_what_its_sources_compile_to() {
    let compiled = builtin::compile();
    if std::env::var_os("PORTICO_BLESS").is_some() {
        // Written for the next build; this one embeds the old file.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/descriptors/builtin.binpb");
        std::fs::write(path, &compiled).unwrap();
        return;
    }
    assert!(
        compiled == builtin::SET,
        "src/descriptors/builtin.binpb is stale: run this test with PORTICO_BLESS=1"
    );
}

#[test]
fn the_built_in_files_compile_into_a_pool() {
    let pool = builtin::pool();
    assert!(pool.get_message_by_name("google.api.HttpRule").is_some());
    assert!(pool.get_message_by_name("google.rpc.BadRequest").is_some());
    assert!(pool
        .get_message_by_name("google.protobuf.Timestamp")
        .is_some());
}

#[test]
fn protos_compile_in_process_with_builtin_googleapis() {
    let set = compile_protos(&["proto"], &["portico/demo/v1/library.proto".to_owned()]).unwrap();
    let mut pool = builtin::pool();
    add_set(&mut pool, &set, "test").unwrap();
    let method = pool.get_service_by_name("portico.demo.v1.Library").unwrap();
    let get_shelf = method.methods().find(|m| m.name() == "GetShelf").unwrap();
    let rule = http_rule::of(&get_shelf).expect("GetShelf has an http rule");
    assert_eq!(
        rule.pattern,
        Some(http_rule::Pattern::Get("/v1/shelves/{shelf}".into()))
    );
}

#[test]
fn a_missing_import_names_the_file_and_the_import() {
    let dir = crate::scratch::ScratchDir::new("missing-import");
    std::fs::write(
        dir.join("a.proto"),
        "syntax = \"proto3\";\nimport \"nowhere/b.proto\";\n",
    )
    .unwrap();
    let (index, err) = compile_protos(&[&dir], &["a.proto".to_owned()]).unwrap_err();
    assert_eq!(index, 0);
    assert!(err.to_string().contains("nowhere/b.proto"), "{err}");
    // A file that does not compile is named with the line and column.
    std::fs::write(
        dir.join("c.proto"),
        "syntax = \"proto3\";\npackage acme;\nmessage X {\n  strin g = 1;\n}\n",
    )
    .unwrap();
    let (index, err) =
        compile_protos(&[&dir], &["c.proto".to_owned(), "a.proto".to_owned()]).unwrap_err();
    assert_eq!(index, 0);
    assert!(err.to_string().starts_with("c.proto:4:3: "), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_proto3_message_using_a_closed_enum_is_refused_as_protoc_refuses_it() {
    let dir = crate::scratch::ScratchDir::new("closed-enum");
    std::fs::write(
        dir.join("p2.proto"),
        "syntax = \"proto2\";\npackage p2;\nenum E { ONE = 1; }\nmessage Outer { enum Inner { A = 1; } }\n",
    )
    .unwrap();
    for (field, enum_name) in [
        ("p2.E e = 1;", "p2.E"),
        ("p2.Outer.Inner i = 1;", "p2.Outer.Inner"),
    ] {
        std::fs::write(
            dir.join("p3.proto"),
            format!("syntax = \"proto3\";\npackage p3;\nimport \"p2.proto\";\nmessage M {{ message N {{ {field} }} }}\n"),
        )
        .unwrap();
        let (index, err) =
            compile_protos(&[&dir], &["p2.proto".to_owned(), "p3.proto".to_owned()]).unwrap_err();
        assert_eq!(index, 1, "{err}");
        let said = err.to_string();
        assert!(
            said.starts_with("p3.proto: p3.M.N.")
                && said.contains(&format!("its type {enum_name} is a closed enum")),
            "{said}"
        );
    }
    // A proto2 message may use it, and a proto3 one an open enum.
    std::fs::write(
        dir.join("p3.proto"),
        "syntax = \"proto3\";\npackage p3;\nenum Open { ZERO = 0; }\nmessage M { Open o = 1; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("p2b.proto"),
        "syntax = \"proto2\";\npackage p2b;\nimport \"p2.proto\";\nmessage M { optional p2.E e = 1; }\n",
    )
    .unwrap();
    compile_protos(&[&dir], &["p3.proto".to_owned(), "p2b.proto".to_owned()]).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_set_without_its_imports_is_refused_naming_the_import() {
    let mut set = FileDescriptorSet::decode(
        compile_protos(&["proto"], &["portico/demo/v1/feed.proto".to_owned()])
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    set.file
        .retain(|f| f.name() == "portico/demo/v1/feed.proto");
    // google/api/annotations.proto is built in, so drop a dependency that is not.
    set.file[0].dependency.push("company/shared.proto".into());
    let err = add_set(&mut builtin::pool(), &set.encode_to_vec(), "feed.binpb").unwrap_err();
    assert_eq!(err.symbol.as_deref(), Some("portico/demo/v1/feed.proto"));
    assert!(err.reason.contains("company/shared.proto"), "{err}");
}

#[test]
fn a_symbol_defined_twice_is_an_error_naming_it() {
    let mut set = FileDescriptorSet::decode(
        compile_protos(&["proto"], &["portico/demo/v1/feed.proto".to_owned()])
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let mut copy = set
        .file
        .iter()
        .find(|f| f.name() == "portico/demo/v1/feed.proto")
        .unwrap()
        .clone();
    copy.name = Some("portico/demo/v1/feed_copy.proto".into());
    set.file.push(copy);
    let err = add_set(&mut builtin::pool(), &set.encode_to_vec(), "dup.binpb").unwrap_err();
    assert!(err.to_string().contains("portico.demo.v1"), "{err}");
}

#[test]
fn two_sources_that_disagree_about_a_file_are_an_error_naming_it() {
    let compiled = compile_protos(&["proto"], &["portico/demo/v1/library.proto".to_owned()])
        .expect("compiles");
    // The same file twice (a set and reflection of a backend built from
    // it): one copy is used, no error.
    let mut pool = builtin::pool();
    add_set(&mut pool, &compiled, "descriptors.sets[0]").unwrap();
    add_set(&mut pool, &compiled, "reflection of upstream demo").unwrap();

    // Another version of it: a method more.
    let mut newer = FileDescriptorSet::decode(compiled.as_slice()).unwrap();
    let library = newer
        .file
        .iter_mut()
        .find(|f| f.name() == "portico/demo/v1/library.proto")
        .unwrap();
    let mut ping = library.service[0].method[0].clone();
    ping.name = Some("Ping".into());
    library.service[0].method.push(ping);
    let err = add_set(&mut pool, &newer.encode_to_vec(), "descriptors.protos").unwrap_err();
    assert_eq!(err.symbol.as_deref(), Some("portico/demo/v1/library.proto"));
    assert!(err.reason.contains("earlier schema source"), "{err}");
    assert!(
        pool.get_service_by_name("portico.demo.v1.Library")
            .unwrap()
            .methods()
            .all(|m| m.name() != "Ping"),
        "nothing of the refused copy was taken"
    );

    // Comments alone make no other file.
    let mut commented = FileDescriptorSet::decode(compiled.as_slice()).unwrap();
    for f in &mut commented.file {
        f.source_code_info = None;
    }
    add_set(&mut pool, &commented.encode_to_vec(), "descriptors.protos").unwrap();
}

#[test]
fn an_empty_set_is_named_as_one() {
    let err = add_set(&mut builtin::pool(), &[], "empty.binpb").unwrap_err();
    assert_eq!(err.source, "empty.binpb");
    assert!(err.reason.contains("holds no files"), "{err}");
}

#[test]
fn a_set_in_protobuf_editions_is_refused_naming_the_file_not_a_crash() {
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto};
    // What protoc writes for `edition = "2023"; package e; message R {...}`
    // (its edition field, 14, is one this reader's types do not know).
    let file = FileDescriptorProto {
        name: Some("e/min.proto".into()),
        package: Some("e".into()),
        syntax: Some("editions".into()),
        message_type: vec![DescriptorProto {
            name: Some("R".into()),
            field: vec![FieldDescriptorProto {
                name: Some("id".into()),
                number: Some(1),
                r#type: Some(9),
                json_name: Some("id".into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut bytes = FileDescriptorSet { file: vec![file] }.encode_to_vec();
    // edition = EDITION_2023 (1000), appended to the file as protoc would.
    let mut with_edition = FileDescriptorProto::decode(&bytes[2..])
        .unwrap()
        .encode_to_vec();
    with_edition.extend_from_slice(&[0x70, 0xe8, 0x07]);
    bytes = vec![0x0a];
    prost::encoding::encode_varint(with_edition.len() as u64, &mut bytes);
    bytes.extend_from_slice(&with_edition);
    let mut pool = builtin::pool();
    let err = add_set(&mut pool, &bytes, "min.binpb")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("min.binpb")
            && err.contains("e/min.proto")
            && err.contains("protobuf editions"),
        "{err}"
    );
    // In a .proto file: the parser's error, and what it means.
    let dir = crate::scratch::ScratchDir::new("editions");
    std::fs::write(dir.join("min.proto"), "edition = \"2023\";\npackage e;\n").unwrap();
    let (_, err) = compile_protos(&[&dir], &["min.proto".to_owned()]).unwrap_err();
    assert!(
        err.to_string().contains("written in protobuf editions"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// protobuf's own files come from the compiler whatever copy an include
/// folder holds (protoc's include folder is often added whole, and its
/// newer `descriptor.proto` uses syntax the parser does not read), and
/// `google/rpc/code.proto` is built in like the other google.rpc files.
#[test]
fn protobufs_own_files_are_the_compilers_and_google_rpc_code_is_built_in() {
    let dir = crate::scratch::ScratchDir::new("wkt");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "google/protobuf/descriptor.proto",
        "syntax = \"proto2\";\npackage google.protobuf;\nmessage FileOptions {\n  extensions 1000 [declaration = { number: 1000, full_name: \".x.y\", type: \"string\" }];\n}\n",
    );
    write(
        "acme/v1/jobs.proto",
        "syntax = \"proto3\";\npackage acme.v1;\nimport \"google/api/annotations.proto\";\nimport \"google/protobuf/timestamp.proto\";\nimport \"google/rpc/code.proto\";\nmessage Job { google.protobuf.Timestamp at = 1; google.rpc.Code code = 2; }\nservice Jobs {\n  rpc Get(Job) returns (Job) { option (google.api.http) = { get: \"/v1/jobs\" }; }\n}\n",
    );
    let set = compile_protos(&[&dir], &["acme/v1/jobs.proto".to_owned()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let mut pool = builtin::pool();
    add_set(&mut pool, &set.unwrap(), "test").unwrap();
    let job = pool.get_message_by_name("acme.v1.Job").unwrap();
    assert_eq!(
        job.get_field_by_name("code")
            .unwrap()
            .kind()
            .as_enum()
            .unwrap()
            .full_name(),
        "google.rpc.Code"
    );
}

#[test]
fn a_missing_proto_is_said_to_be_missing_and_one_outside_the_folders_to_be_outside() {
    let err = compile_protos(&["proto"], &["portico/demo/v1/nofile.proto".to_owned()])
        .unwrap_err()
        .1;
    assert!(
        err.to_string()
            .contains("no such file: not in any include folder (proto)"),
        "{err}"
    );
    // A real file, named by a path outside the include folders.
    let outside = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/openapi/kinds.proto"
    );
    let err = compile_protos(&["proto"], &[outside.to_owned()])
        .unwrap_err()
        .1;
    assert!(
        err.to_string()
            .contains("the file is outside every include folder (proto)"),
        "{err}"
    );
}

/// A set as a backend's reflection might hand it over: files by name, each
/// importing the files listed beside it.
fn set_of(files: &[(&str, &[&str])]) -> Vec<u8> {
    FileDescriptorSet {
        file: files
            .iter()
            .map(|(name, imports)| prost_types::FileDescriptorProto {
                name: Some((*name).to_owned()),
                package: Some("p".to_owned()),
                syntax: Some("proto3".to_owned()),
                dependency: imports.iter().map(|i| (*i).to_owned()).collect(),
                ..Default::default()
            })
            .collect(),
    }
    .encode_to_vec()
}

#[test]
fn a_set_whose_files_import_themselves_is_refused_naming_the_cycle() {
    for (files, says) in [
        (
            &[("a.proto", &["b.proto"][..]), ("b.proto", &["a.proto"][..])][..],
            "imports itself, through a.proto -> b.proto -> a.proto",
        ),
        (
            &[("self.proto", &["self.proto"][..])][..],
            "imports itself, through self.proto -> self.proto",
        ),
        (
            &[
                ("top.proto", &["mid.proto"][..]),
                ("mid.proto", &["low.proto"][..]),
                ("low.proto", &["mid.proto"][..]),
            ][..],
            "imports itself, through mid.proto -> low.proto -> mid.proto",
        ),
    ] {
        let err = add_set(&mut builtin::pool(), &set_of(files), "reflection").unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
    // A diamond is no cycle.
    let diamond = set_of(&[
        ("base.proto", &[]),
        ("left.proto", &["base.proto"]),
        ("right.proto", &["base.proto"]),
        ("top.proto", &["left.proto", "right.proto"]),
    ]);
    add_set(&mut builtin::pool(), &diamond, "reflection").unwrap();
}

#[test]
fn a_file_name_protobuf_would_not_write_is_refused() {
    for name in [
        "../../etc/passwd",
        "/abs.proto",
        "a//b.proto",
        "./a.proto",
        "a\\b.proto",
        "",
    ] {
        let err = add_set(&mut builtin::pool(), &set_of(&[(name, &[])]), "reflection").unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a file name protobuf takes"),
            "{name}: {err}"
        );
    }
    add_set(
        &mut builtin::pool(),
        &set_of(&[("acme/v1/api.proto", &[])]),
        "reflection",
    )
    .unwrap();
}

#[test]
fn two_sources_disagreeing_about_a_google_file_the_gateway_lacks_are_an_error() {
    let money = |field: &str| {
        FileDescriptorSet {
            file: vec![prost_types::FileDescriptorProto {
                name: Some("google/type/money.proto".to_owned()),
                package: Some("google.type".to_owned()),
                syntax: Some("proto3".to_owned()),
                message_type: vec![prost_types::DescriptorProto {
                    name: Some("Money".to_owned()),
                    field: vec![prost_types::FieldDescriptorProto {
                        name: Some(field.to_owned()),
                        number: Some(1),
                        label: Some(1),
                        r#type: Some(9),
                        json_name: Some(field.to_owned()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    };
    let mut pool = builtin::pool();
    add_set(&mut pool, &money("currency_code"), "first").unwrap();
    add_set(&mut pool, &money("currency_code"), "same again").unwrap();
    let err = add_set(&mut pool, &money("units"), "second").unwrap_err();
    assert!(
        err.to_string()
            .contains("an earlier schema source defines this file"),
        "{err}"
    );
    // A built-in file is the gateway's own: another copy is not read.
    let own = FileDescriptorSet {
        file: vec![prost_types::FileDescriptorProto {
            name: Some("google/api/http.proto".to_owned()),
            package: Some("google.api".to_owned()),
            syntax: Some("proto3".to_owned()),
            ..Default::default()
        }],
    }
    .encode_to_vec();
    add_set(&mut builtin::pool(), &own, "a copy").unwrap();
}
