//! libFuzzer entry of `cardsync_fuzz::delta_page`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cardsync_fuzz::delta_page(data));
