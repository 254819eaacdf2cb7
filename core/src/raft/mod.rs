//! Raft consensus as a sans-IO state machine.
//!
//! A [`RaftNode`] is a plain value. The driver calls it with the current [`Time`] and an
//! input (a tick, a peer [`Message`], a proposal, a read request, "batch N is durable"),
//! then drains a [`Ready`]: the batch to persist, messages that may leave now, committed
//! entries to apply, confirmed reads, and when it wants to be woken next.
//!
//! Durability order is enforced inside the core: a message that depends on state not yet
//! reported durable (a vote, an append acknowledgement, anything carrying a new term) is
//! held back until the driver calls [`RaftNode::persisted`] for the batch holding that
//! state. The leader's own appends go out while its write is still in flight; its own
//! entries count towards a quorum only once durable.
//!
//! Membership changes are one voter at a time and take effect when applied (see
//! `membership.rs` for the safety rule and why it is sufficient).

pub mod codec;
mod config;
mod election;
mod error;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod read_index;
mod ready;
mod replication;
mod snapshot;
mod standalone;
/// A deterministic in-memory cluster for raft tests (`testkit` feature: tests only).
#[cfg(feature = "testkit")]
pub mod testkit;
mod types;
mod wire;

#[cfg(feature = "planted-bugs")]
pub use config::PlantedBug;
pub use config::{Config, ReadMode};
pub use error::{
    ConfChangeError, ConfigError, ProposeError, ReadError, RecoverError, TransferError,
};
pub use message::{Message, MessageBody, RejectHint};
pub use node::{Proposed, RaftNode, RestartError, Role, SoftState};
pub use ready::{PersistBatch, ReadState, Ready};
pub use standalone::{force_new_cluster, ForcedRestart};
pub use types::{
    ConfChange, ConfState, Entry, EntryPayload, HardState, LogIndex, MemberId, PersistSeq, ReadCtx,
    RecoveredState, Snapshot, SnapshotMeta, Term, Time,
};
pub use wire::{decode_message, encode_message, WireError};
