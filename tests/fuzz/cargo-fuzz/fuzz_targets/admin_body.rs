//! libFuzzer entry of `cardsync_fuzz::admin_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_fuzz::admin_body(data));
