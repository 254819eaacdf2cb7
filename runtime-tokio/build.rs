//! Compiles etcd's gRPC API (proto/) into Rust: protox parses the .proto files in
//! pure Rust (no system protoc), tonic-prost-build generates prost messages plus tonic
//! clients and servers. `bytes` fields become `bytes::Bytes` so keys and values are
//! zero-copy slices of the request buffer. pbjson-build derives, from the same
//! descriptors, the serde impls of grpc-gateway's JSON mapping that the HTTP/JSON
//! gateway speaks (proto field names, 64-bit integers as strings, bytes as base64, enum
//! names, defaults omitted, unknown fields ignored).

use std::path::Path;

const PROTO_DIR: &str = "proto";

const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
    "grpc/health/v1/health.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    for proto in PROTOS {
        println!(
            "cargo:rerun-if-changed={}",
            Path::new(PROTO_DIR).join(proto).display()
        );
    }

    let fds = protox::compile(PROTOS, [PROTO_DIR])?;
    let descriptors = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".")
        .compile_fds(fds)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[
            ".mvccpb",
            ".authpb",
            ".etcdserverpb",
            ".v3lockpb",
            ".v3electionpb",
        ])?;
    Ok(())
}
