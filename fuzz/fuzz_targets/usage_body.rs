#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| batchling_fuzz::usage_body(data));
