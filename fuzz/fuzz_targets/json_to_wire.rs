#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portico::fuzzing::json_to_wire(data));
