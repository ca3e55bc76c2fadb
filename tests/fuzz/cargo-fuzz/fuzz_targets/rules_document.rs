//! libFuzzer entry of `cardsync_fuzz::rules_document`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_fuzz::rules_document(data));
