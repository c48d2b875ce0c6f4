#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| codex_as_api::fuzzing::json_spans(data));
