#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico::fuzzing::proto_roundtrip(data));
