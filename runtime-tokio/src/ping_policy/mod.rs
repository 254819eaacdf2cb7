//! `--grpc-keepalive-min-time`, enforced as etcd 3.4's gRPC server (grpc-go) enforces
//! it on plaintext connections: a client that pings too often gets GOAWAY
//! ENHANCE_YOUR_CALM "too_many_pings" and its connection is closed. hyper's HTTP/2
//! server answers every PING and has no such policy, so keel applies it beneath hyper,
//! on the bytes of each connection: [`frames`] finds the HTTP/2 frames, [`policy`] is
//! grpc-go's state machine over them, and [`PingPoliced`] is the connection wrapper that
//! feeds one to the other and writes the GOAWAY.

pub mod frames;
mod io;
pub mod policy;

pub use io::PingPoliced;
pub use policy::PingPolicy;
