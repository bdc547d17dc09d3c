#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| batchling_fuzz::routes_config(data));
