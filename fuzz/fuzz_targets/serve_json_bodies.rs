#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| batchling_fuzz::serve_json_bodies(data));
