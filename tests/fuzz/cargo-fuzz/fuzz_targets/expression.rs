//! libFuzzer entry of `cardsync_fuzz::expression`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_fuzz::expression(data));
