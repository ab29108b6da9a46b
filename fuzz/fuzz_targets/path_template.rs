#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico::fuzzing::path_template(data));
