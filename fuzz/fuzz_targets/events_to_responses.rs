#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| codex_as_api::fuzzing::events_to_responses(data));
