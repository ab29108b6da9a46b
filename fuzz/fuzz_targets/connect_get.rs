#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico::fuzzing::connect_get(data));
