//! One member composed: raft, the applied keyspace, the auth store and the cluster's
//! membership.
//!
//! [`Command`]s are what clients' writes become in the replicated log; the
//! [`StateMachine`] applies them identically on every member and answers the proposer.

mod command;
mod compactor;
pub mod corruption;
pub mod disk_queue;
pub mod member;
mod state_machine;

pub use crate::auth::{AuthCommand, AuthError, AuthInfo, AuthOutcome};
pub use command::{decode_command, encode_command, Command, CommandDecodeError, Proposal};
pub use compactor::{AutoCompaction, Compactor};
#[cfg(feature = "planted-bugs")]
pub use member::MemberBug;
pub use member::{
    AppliedRecord, AuthNote, Call, CorruptCheck, HashRequest, Header, Member, MemberChange,
    MemberConfig, MemberError, Note, Output, Request, Response, Status, Token, NO_LEADER_PERIODS,
};
pub use state_machine::{
    alarm, decode_members, write_members, Applied, MemberInfo, NodeImageError, Outcome,
    StateMachine,
};
