//! Fuzzes the peer-message decoder (every frame a peer sends reaches it, before any
//! authentication of its content): arbitrary bytes must give an error or a message,
//! never a panic, and a decoded message must survive encode → decode unchanged.

#![no_main]

use bytes::Bytes;
use keel_core::raft::{decode_message, encode_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode_message(&Bytes::copy_from_slice(data)) else {
        return;
    };
    let mut out = Vec::new();
    encode_message(&m, &mut out);
    let again = decode_message(&Bytes::from(out.clone())).expect("an encoded message decodes");
    assert_eq!(m, again);
    let mut out2 = Vec::new();
    encode_message(&again, &mut out2);
    assert_eq!(out, out2);
});
