//! Fuzzes the replicated-command decoder (every committed entry's data goes through it
//! on every member): arbitrary bytes must decode to an error or a proposal, never panic,
//! and a decoded proposal must survive encode → decode unchanged.

#![no_main]

use bytes::Bytes;
use keel_core::node::{decode_command, encode_command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = decode_command(&Bytes::copy_from_slice(data)) else {
        return;
    };
    let again = encode_command(&p);
    let q = decode_command(&Bytes::from(again.clone())).expect("an encoded proposal decodes");
    assert_eq!(p, q);
    assert_eq!(encode_command(&q), again);
});
