//! Sequential models: the two of the validation corpus, and the etcd key-value register
//! Keel's simulation clients check against.

pub mod append_kv;
pub mod cas_register;
pub mod etcd_kv;

pub use append_kv::{AppendKv, AppendKvInput, AppendKvOutput};
pub use cas_register::{CasRegister, RegisterInput, RegisterOutput};
pub use etcd_kv::{Compare, EtcdKv, KeyState, KeyValue, KvInput, KvOutput, RevisionBound, WriteOp};
