use super::*;

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
    let dir = std::env::temp_dir().join(format!("portico-missing-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
