//! Fuzzes the JSON gateway's request decoding (any HTTP client reaches it): the first
//! byte picks the path (`kv/put`, `watch`, ...), the rest is the POST body. Bad JSON is
//! an error, never a panic; a body that decodes must survive protobuf → JSON → protobuf
//! unchanged.

#![no_main]

use keel_runtime_tokio::gateway::{decode_request, paths, request_json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let all: Vec<&str> = paths().collect();
    let path = all[usize::from(which) % all.len()];
    let Some(Ok(pb)) = decode_request(path, body) else {
        return;
    };
    let json = request_json(path, &pb)
        .expect("known path")
        .expect("a request the gateway built serializes");
    let again = decode_request(path, json.as_bytes())
        .expect("known path")
        .unwrap_or_else(|e| panic!("{path}: its own JSON {json} does not decode: {e}"));
    assert_eq!(pb, again, "{path}: {json}");
});
