//! libFuzzer entry of `cardsync_fuzz::jwt`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_fuzz::jwt(data));
