//! libFuzzer entry of `cardsync_fuzz::notification_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_fuzz::notification_body(data));
