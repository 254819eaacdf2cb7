//! The replicated-log encoding of client writes and membership commands.
//!
//! A [`Proposal`] is the data of one raft entry. Its encoding starts with a format version
//! so later builds can add commands or fields and still read old logs; integers are
//! fixed-width little-endian, byte strings and text are a u32 length then the bytes.
//!
//! ```text
//! 0       format version (2; version 1 lacks the auth field and is still read)
//! 1..9    origin u64
//! 9..17   seq u64
//! 17      auth u8 (0 none | 1 then user str, auth revision u64)   (version 2 only)
//! then    command kind, then its body:
//!   1  Put            put
//!   2  DeleteRange    delete
//!   3  Txn            txn
//!   4  Compact        revision i64, physical u8 (0|1)
//!   5  LeaseGrant     id i64, ttl i64
//!   6  LeaseRevoke    id i64
//!   7  Alarm          action i32, member u64, alarm i32
//!   8  PublishMember  id u64, name str, n u32, n × client url str
//!   9  UpdateMember   id u64, n u32, n × peer url str
//!   10 AddMember      id u64, learner u8 (0|1), n u32, n × peer url str
//!   11 AuthEnable
//!   12 AuthDisable
//!   13 Authenticate   name str, token str
//!   14 UserAdd        name str, password_hash str, no_password u8 (0|1)
//!   15 UserDelete     name str
//!   16 UserChangePassword name str, password_hash str
//!   17 UserGrantRole  user str, role str
//!   18 UserRevokeRole user str, role str
//!   19 RoleAdd        name str
//!   20 RoleDelete     name str
//!   21 RoleGrantPermission  name str, kind u8 (0 read, 1 write, 2 readwrite), key bytes,
//!                     range_end bytes
//!   22 RoleRevokePermission name str, key bytes, range_end bytes
//!   23 LeaseCheckpoint n u32, n × (id i64, remaining_ttl i64)
//!
//! put     = key bytes, value bytes, lease i64, flags u8 (1 prev_kv, 2 ignore_value,
//!           4 ignore_lease)
//! delete  = key bytes, range_end bytes, prev_kv u8 (0|1)
//! range   = key bytes, range_end bytes, limit i64, revision i64, sort_order u8,
//!           sort_target u8, flags u8 (1 keys_only, 2 count_only), min_mod_revision i64,
//!           max_mod_revision i64, min_create_revision i64, max_create_revision i64
//! txn     = n u32, n × compare, n u32, n × op (success), n u32, n × op (failure)
//! compare = result u8, target u8, operand (i64, or bytes for a value), key bytes,
//!           range_end bytes
//! op      = 0 range | 1 put | 2 delete | 3 txn, followed by that
//! ```
//!
//! Enumerations use etcd's protobuf numbers (`CompareResult`, `CompareTarget`,
//! `SortOrder`, `SortTarget`). Booleans, flags and tags admit no undefined values and
//! nothing may follow the proposal, so an accepted buffer has exactly one meaning: every
//! member applies the same command from the same entry.

use bytes::Bytes;

use crate::auth::{AuthCommand, AuthInfo, PermKind, Permission};
use crate::mvcc::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    SortOrder, SortTarget, TxnRequest,
};

/// The format version this build writes.
const VERSION: u8 = 2;
/// The version before proposals carried who asked; still read.
const VERSION_1: u8 = 1;

const C_PUT: u8 = 1;
const C_DELETE_RANGE: u8 = 2;
const C_TXN: u8 = 3;
const C_COMPACT: u8 = 4;
const C_LEASE_GRANT: u8 = 5;
const C_LEASE_REVOKE: u8 = 6;
const C_ALARM: u8 = 7;
const C_PUBLISH_MEMBER: u8 = 8;
const C_UPDATE_MEMBER: u8 = 9;
const C_ADD_MEMBER: u8 = 10;
const C_AUTH_ENABLE: u8 = 11;
const C_AUTH_DISABLE: u8 = 12;
const C_AUTHENTICATE: u8 = 13;
const C_USER_ADD: u8 = 14;
const C_USER_DELETE: u8 = 15;
const C_USER_CHANGE_PASSWORD: u8 = 16;
const C_USER_GRANT_ROLE: u8 = 17;
const C_USER_REVOKE_ROLE: u8 = 18;
const C_ROLE_ADD: u8 = 19;
const C_ROLE_DELETE: u8 = 20;
const C_ROLE_GRANT_PERMISSION: u8 = 21;
const C_ROLE_REVOKE_PERMISSION: u8 = 22;
const C_LEASE_CHECKPOINT: u8 = 23;

const OP_RANGE: u8 = 0;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_TXN: u8 = 3;

/// Smallest encoded op: a delete of empty key and range end (tag, two lengths, prev_kv).
const MIN_OP: usize = 1 + 4 + 4 + 1;
/// Smallest encoded compare: result, target, an empty value and empty key and range end.
const MIN_COMPARE: usize = 1 + 1 + 4 + 4 + 4;
/// Smallest encoded string: its length.
const MIN_STR: usize = 4;
/// An encoded lease checkpoint: ID and remaining TTL.
const CHECKPOINT_LEN: usize = 8 + 8;

/// A client write as it travels through the replicated log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// Member that proposed it (the one holding the client's request).
    pub origin: u64,
    /// The origin's request number, so the origin can route the result to its client.
    pub seq: u64,
    /// Who asked (the user of the client's token and its auth revision); `None` for an
    /// unauthenticated request. Checked at apply while auth is enabled.
    pub auth: Option<AuthInfo>,
    /// What to apply.
    pub cmd: Command,
}

/// What applying an entry does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// etcd's Put.
    Put(PutRequest),
    /// etcd's DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// etcd's Txn (operations may be nested transactions, up to
    /// [`Command::MAX_TXN_DEPTH`] levels).
    Txn(TxnRequest),
    /// etcd's Compact.
    Compact {
        /// Compact history at or below this revision.
        revision: i64,
        /// The client asked to wait until the compaction is physically done.
        physical: bool,
    },
    /// etcd's LeaseGrant, with the ID already chosen (so every member grants the same).
    LeaseGrant {
        /// Lease ID.
        id: i64,
        /// Time to live in seconds.
        ttl: i64,
    },
    /// etcd's LeaseRevoke (also what an expired lease becomes).
    LeaseRevoke {
        /// Lease ID.
        id: i64,
    },
    /// etcd's LeaseCheckpoint (proposed by the leader): each lease's remaining TTL in
    /// seconds, which a new leader restarts it from (0 clears it).
    LeaseCheckpoint {
        /// (lease ID, remaining TTL) pairs.
        checkpoints: Vec<(i64, i64)>,
    },
    /// etcd's Alarm request: action 0 get, 1 activate, 2 deactivate; alarm 0 none,
    /// 1 nospace, 2 corrupt. Carried as raw numbers: validation belongs to the server.
    Alarm {
        /// What to do.
        action: i32,
        /// Member the alarm is about.
        member: u64,
        /// Which alarm.
        alarm: i32,
    },
    /// A member publishes its name and client URLs (etcd's publish after start).
    PublishMember {
        /// Member ID.
        id: u64,
        /// Human-readable name.
        name: String,
        /// URLs clients reach it on.
        client_urls: Vec<String>,
    },
    /// A member's peer URLs changed (MemberUpdate).
    UpdateMember {
        /// Member ID.
        id: u64,
        /// New peer URLs.
        peer_urls: Vec<String>,
    },
    /// Register a member about to be added by a raft conf change (MemberAdd), with its
    /// peer URLs and learner flag.
    AddMember {
        /// Member ID.
        id: u64,
        /// Peer URLs.
        peer_urls: Vec<String>,
        /// Added as a learner.
        learner: bool,
    },
    /// A change to users, roles or permissions, or an Authenticate.
    Auth(AuthCommand),
}

impl Command {
    /// Deepest transaction nesting the decoder accepts (a flat txn has depth 1). The bound
    /// keeps decoding a hostile entry from exhausting the stack; a server must refuse
    /// deeper requests before proposing them (see [`Command::txn_depth`]), since a
    /// committed entry that no member can decode would stall every member's apply.
    pub const MAX_TXN_DEPTH: usize = 64;

    /// Transaction nesting depth: 0 for other commands, 1 for a txn without nested txns.
    /// Counting stops at `MAX_TXN_DEPTH + 1`, so even an absurdly deep request is
    /// measured without deep recursion.
    pub fn txn_depth(&self) -> usize {
        fn depth(t: &TxnRequest, level: usize) -> usize {
            if level > Command::MAX_TXN_DEPTH {
                return level;
            }
            t.success
                .iter()
                .chain(&t.failure)
                .filter_map(|op| match op {
                    RequestOp::Txn(inner) => Some(depth(inner, level + 1)),
                    _ => None,
                })
                .max()
                .unwrap_or(level)
        }
        match self {
            Command::Txn(t) => depth(t, 1),
            _ => 0,
        }
    }
}

/// Why an entry's data is not a proposal.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum CommandDecodeError {
    /// Written by a format version this build does not read.
    #[error("command: unsupported format version {0}")]
    Version(u8),
    /// A command kind this build does not know.
    #[error("command: unknown command kind {0}")]
    UnknownCommand(u8),
    /// The data ends inside a field.
    #[error("command: truncated")]
    Truncated,
    /// Bytes follow a complete proposal.
    #[error("command: {0} trailing bytes")]
    TrailingBytes(usize),
    /// A count of items that the rest of the data cannot hold.
    #[error("command: count {0} exceeds what the data can hold")]
    Count(u32),
    /// A tag, flag or boolean with a value the format does not define.
    #[error("command: invalid {what} {value}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// The value found.
        value: u8,
    },
    /// A member name or URL, or an auth name, password hash or token, that is not UTF-8.
    #[error("command: a name, URL, hash or token is not UTF-8")]
    NotUtf8,
    /// Transactions nested deeper than [`Command::MAX_TXN_DEPTH`].
    #[error("command: transactions nested deeper than {}", Command::MAX_TXN_DEPTH)]
    TooDeep,
}

/// Encodes `p` as an entry's data.
///
/// Encoding recurses once per nesting level of a txn: callers check
/// [`Command::txn_depth`] first (deeper txns would encode but never decode).
pub fn encode_command(p: &Proposal) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.push(VERSION);
    put_u64(&mut out, p.origin);
    put_u64(&mut out, p.seq);
    match &p.auth {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            put_bytes(&mut out, a.user.as_bytes());
            put_u64(&mut out, a.revision);
        }
    }
    let o = &mut out;
    match &p.cmd {
        Command::Put(r) => {
            o.push(C_PUT);
            put_put(o, r);
        }
        Command::DeleteRange(r) => {
            o.push(C_DELETE_RANGE);
            put_delete(o, r);
        }
        Command::Txn(t) => {
            o.push(C_TXN);
            put_txn(o, t);
        }
        Command::Compact { revision, physical } => {
            o.push(C_COMPACT);
            put_i64(o, *revision);
            o.push(u8::from(*physical));
        }
        Command::LeaseGrant { id, ttl } => {
            o.push(C_LEASE_GRANT);
            put_i64(o, *id);
            put_i64(o, *ttl);
        }
        Command::LeaseRevoke { id } => {
            o.push(C_LEASE_REVOKE);
            put_i64(o, *id);
        }
        Command::LeaseCheckpoint { checkpoints } => {
            o.push(C_LEASE_CHECKPOINT);
            put_len(o, checkpoints.len());
            for (id, remaining) in checkpoints {
                put_i64(o, *id);
                put_i64(o, *remaining);
            }
        }
        Command::Alarm {
            action,
            member,
            alarm,
        } => {
            o.push(C_ALARM);
            o.extend_from_slice(&action.to_le_bytes());
            put_u64(o, *member);
            o.extend_from_slice(&alarm.to_le_bytes());
        }
        Command::PublishMember {
            id,
            name,
            client_urls,
        } => {
            o.push(C_PUBLISH_MEMBER);
            put_u64(o, *id);
            put_bytes(o, name.as_bytes());
            put_strs(o, client_urls);
        }
        Command::UpdateMember { id, peer_urls } => {
            o.push(C_UPDATE_MEMBER);
            put_u64(o, *id);
            put_strs(o, peer_urls);
        }
        Command::AddMember {
            id,
            peer_urls,
            learner,
        } => {
            o.push(C_ADD_MEMBER);
            put_u64(o, *id);
            o.push(u8::from(*learner));
            put_strs(o, peer_urls);
        }
        Command::Auth(a) => put_auth(o, a),
    }
    out
}

fn put_auth(o: &mut Vec<u8>, a: &AuthCommand) {
    let s = |o: &mut Vec<u8>, v: &str| put_bytes(o, v.as_bytes());
    match a {
        AuthCommand::Enable => o.push(C_AUTH_ENABLE),
        AuthCommand::Disable => o.push(C_AUTH_DISABLE),
        AuthCommand::Authenticate { name, token } => {
            o.push(C_AUTHENTICATE);
            s(o, name);
            s(o, token);
        }
        AuthCommand::UserAdd {
            name,
            password_hash,
            no_password,
        } => {
            o.push(C_USER_ADD);
            s(o, name);
            s(o, password_hash);
            o.push(u8::from(*no_password));
        }
        AuthCommand::UserDelete { name } => {
            o.push(C_USER_DELETE);
            s(o, name);
        }
        AuthCommand::UserChangePassword {
            name,
            password_hash,
        } => {
            o.push(C_USER_CHANGE_PASSWORD);
            s(o, name);
            s(o, password_hash);
        }
        AuthCommand::UserGrantRole { user, role } => {
            o.push(C_USER_GRANT_ROLE);
            s(o, user);
            s(o, role);
        }
        AuthCommand::UserRevokeRole { user, role } => {
            o.push(C_USER_REVOKE_ROLE);
            s(o, user);
            s(o, role);
        }
        AuthCommand::RoleAdd { name } => {
            o.push(C_ROLE_ADD);
            s(o, name);
        }
        AuthCommand::RoleDelete { name } => {
            o.push(C_ROLE_DELETE);
            s(o, name);
        }
        AuthCommand::RoleGrantPermission { name, perm } => {
            o.push(C_ROLE_GRANT_PERMISSION);
            s(o, name);
            o.push(perm.kind as u8);
            put_bytes(o, &perm.key);
            put_bytes(o, &perm.range_end);
        }
        AuthCommand::RoleRevokePermission {
            name,
            key,
            range_end,
        } => {
            o.push(C_ROLE_REVOKE_PERMISSION);
            s(o, name);
            put_bytes(o, key);
            put_bytes(o, range_end);
        }
    }
}

/// Decodes an entry's data; `b` must hold exactly one proposal.
///
/// Keys, values and range ends are zero-copy slices of `b`, so whatever keeps one keeps
/// `b`'s whole buffer alive: for an entry read back from the WAL that is the entry alone,
/// but an entry decoded zero-copy from a peer's message shares that message's buffer. A
/// keyspace that stores values long-term and cares about that retention copies them into
/// its own allocation. Never panics; allocates at most a small multiple of `b.len()`.
pub fn decode_command(b: &Bytes) -> Result<Proposal, CommandDecodeError> {
    let mut r = Reader { b, pos: 0, owed: 0 };
    let version = r.u8()?;
    if version != VERSION && version != VERSION_1 {
        return Err(CommandDecodeError::Version(version));
    }
    let origin = r.u64()?;
    let seq = r.u64()?;
    let auth = match version {
        VERSION_1 => None,
        _ if r.bool("auth flag")? => Some(AuthInfo {
            user: r.string()?,
            revision: r.u64()?,
        }),
        _ => None,
    };
    let cmd = match r.u8()? {
        C_PUT => Command::Put(r.put()?),
        C_DELETE_RANGE => Command::DeleteRange(r.delete()?),
        C_TXN => Command::Txn(r.txn(1)?),
        C_COMPACT => Command::Compact {
            revision: r.i64()?,
            physical: r.bool("compact physical flag")?,
        },
        C_LEASE_GRANT => Command::LeaseGrant {
            id: r.i64()?,
            ttl: r.i64()?,
        },
        C_LEASE_REVOKE => Command::LeaseRevoke { id: r.i64()? },
        C_LEASE_CHECKPOINT => Command::LeaseCheckpoint {
            checkpoints: r.list(CHECKPOINT_LEN, |r| Ok((r.i64()?, r.i64()?)))?,
        },
        C_ALARM => Command::Alarm {
            action: r.i32()?,
            member: r.u64()?,
            alarm: r.i32()?,
        },
        C_PUBLISH_MEMBER => Command::PublishMember {
            id: r.u64()?,
            name: r.string()?,
            client_urls: r.strings()?,
        },
        C_UPDATE_MEMBER => Command::UpdateMember {
            id: r.u64()?,
            peer_urls: r.strings()?,
        },
        C_ADD_MEMBER => {
            let id = r.u64()?;
            let learner = r.bool("learner flag")?;
            Command::AddMember {
                id,
                peer_urls: r.strings()?,
                learner,
            }
        }
        C_AUTH_ENABLE => Command::Auth(AuthCommand::Enable),
        C_AUTH_DISABLE => Command::Auth(AuthCommand::Disable),
        C_AUTHENTICATE => Command::Auth(AuthCommand::Authenticate {
            name: r.string()?,
            token: r.string()?,
        }),
        C_USER_ADD => Command::Auth(AuthCommand::UserAdd {
            name: r.string()?,
            password_hash: r.string()?,
            no_password: r.bool("no_password flag")?,
        }),
        C_USER_DELETE => Command::Auth(AuthCommand::UserDelete { name: r.string()? }),
        C_USER_CHANGE_PASSWORD => Command::Auth(AuthCommand::UserChangePassword {
            name: r.string()?,
            password_hash: r.string()?,
        }),
        C_USER_GRANT_ROLE => Command::Auth(AuthCommand::UserGrantRole {
            user: r.string()?,
            role: r.string()?,
        }),
        C_USER_REVOKE_ROLE => Command::Auth(AuthCommand::UserRevokeRole {
            user: r.string()?,
            role: r.string()?,
        }),
        C_ROLE_ADD => Command::Auth(AuthCommand::RoleAdd { name: r.string()? }),
        C_ROLE_DELETE => Command::Auth(AuthCommand::RoleDelete { name: r.string()? }),
        C_ROLE_GRANT_PERMISSION => {
            let name = r.string()?;
            let kind = match r.tag("permission kind", 2)? {
                0 => PermKind::Read,
                1 => PermKind::Write,
                _ => PermKind::ReadWrite,
            };
            Command::Auth(AuthCommand::RoleGrantPermission {
                name,
                perm: Permission {
                    kind,
                    key: r.bytes()?,
                    range_end: r.bytes()?,
                },
            })
        }
        C_ROLE_REVOKE_PERMISSION => Command::Auth(AuthCommand::RoleRevokePermission {
            name: r.string()?,
            key: r.bytes()?,
            range_end: r.bytes()?,
        }),
        other => return Err(CommandDecodeError::UnknownCommand(other)),
    };
    match r.remaining() {
        0 => Ok(Proposal {
            origin,
            seq,
            auth,
            cmd,
        }),
        n => Err(CommandDecodeError::TrailingBytes(n)),
    }
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Lengths and counts are u32. Entries are far below 4 GiB (a WAL record is at most
/// `wal::MAX_PAYLOAD`), so saturating only keeps an impossible length from wrapping into a
/// plausible one: the entry then fails to decode instead of misparsing.
fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_strs(out: &mut Vec<u8>, v: &[String]) {
    put_len(out, v.len());
    for s in v {
        put_bytes(out, s.as_bytes());
    }
}

fn put_put(out: &mut Vec<u8>, r: &PutRequest) {
    put_bytes(out, &r.key);
    put_bytes(out, &r.value);
    put_i64(out, r.lease);
    out.push(u8::from(r.prev_kv) | u8::from(r.ignore_value) << 1 | u8::from(r.ignore_lease) << 2);
}

fn put_delete(out: &mut Vec<u8>, r: &DeleteRangeRequest) {
    put_bytes(out, &r.key);
    put_bytes(out, &r.range_end);
    out.push(u8::from(r.prev_kv));
}

fn put_range(out: &mut Vec<u8>, r: &RangeRequest) {
    put_bytes(out, &r.key);
    put_bytes(out, &r.range_end);
    put_i64(out, r.limit);
    put_i64(out, r.revision);
    out.push(match r.sort_order {
        SortOrder::None => 0,
        SortOrder::Ascend => 1,
        SortOrder::Descend => 2,
    });
    out.push(match r.sort_target {
        SortTarget::Key => 0,
        SortTarget::Version => 1,
        SortTarget::Create => 2,
        SortTarget::Mod => 3,
        SortTarget::Value => 4,
    });
    out.push(u8::from(r.keys_only) | u8::from(r.count_only) << 1);
    put_i64(out, r.min_mod_revision);
    put_i64(out, r.max_mod_revision);
    put_i64(out, r.min_create_revision);
    put_i64(out, r.max_create_revision);
}

fn put_txn(out: &mut Vec<u8>, t: &TxnRequest) {
    put_len(out, t.compare.len());
    for c in &t.compare {
        out.push(match c.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        });
        match &c.target {
            CompareTarget::Version(v) => {
                out.push(0);
                put_i64(out, *v);
            }
            CompareTarget::Create(v) => {
                out.push(1);
                put_i64(out, *v);
            }
            CompareTarget::Mod(v) => {
                out.push(2);
                put_i64(out, *v);
            }
            CompareTarget::Value(v) => {
                out.push(3);
                put_bytes(out, v);
            }
            CompareTarget::Lease(v) => {
                out.push(4);
                put_i64(out, *v);
            }
        }
        put_bytes(out, &c.key);
        put_bytes(out, &c.range_end);
    }
    for ops in [&t.success, &t.failure] {
        put_len(out, ops.len());
        for op in ops {
            match op {
                RequestOp::Range(r) => {
                    out.push(OP_RANGE);
                    put_range(out, r);
                }
                RequestOp::Put(r) => {
                    out.push(OP_PUT);
                    put_put(out, r);
                }
                RequestOp::DeleteRange(r) => {
                    out.push(OP_DELETE);
                    put_delete(out, r);
                }
                RequestOp::Txn(inner) => {
                    out.push(OP_TXN);
                    put_txn(out, inner);
                }
            }
        }
    }
}

/// A cursor over `b` handing out zero-copy slices of it.
struct Reader<'a> {
    b: &'a Bytes,
    pos: usize,
    /// Bytes that items already counted by enclosing lists still need (their minimum
    /// encoded size each). A list nested inside an item may only claim what is left beyond
    /// them, so the capacity reserved across all nesting levels together stays within
    /// the input, not the input once per level.
    owed: usize,
}

type Res<T> = Result<T, CommandDecodeError>;

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.b.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Res<&[u8]> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(CommandDecodeError::Truncated)?;
        let s = self
            .b
            .get(self.pos..end)
            .ok_or(CommandDecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Res<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn i32(&mut self) -> Res<i32> {
        self.array().map(i32::from_le_bytes)
    }

    fn u64(&mut self) -> Res<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Res<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn bool(&mut self, what: &'static str) -> Res<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(CommandDecodeError::Invalid { what, value }),
        }
    }

    /// `N` boolean flags in the low bits of one byte; any other bit set is invalid.
    fn flags<const N: usize>(&mut self, what: &'static str) -> Res<[bool; N]> {
        let value = self.u8()?;
        if u32::from(value) >> N != 0 {
            return Err(CommandDecodeError::Invalid { what, value });
        }
        Ok(std::array::from_fn(|i| value & (1 << i) != 0))
    }

    fn tag(&mut self, what: &'static str, max: u8) -> Res<u8> {
        match self.u8()? {
            value if value <= max => Ok(value),
            value => Err(CommandDecodeError::Invalid { what, value }),
        }
    }

    fn len(&mut self) -> Res<usize> {
        usize::try_from(self.u32()?).map_err(|_| CommandDecodeError::Truncated)
    }

    /// A length-prefixed byte string, zero-copy.
    fn bytes(&mut self) -> Res<Bytes> {
        let n = self.len()?;
        let start = self.pos;
        self.take(n)?;
        Ok(self.b.slice(start..start + n))
    }

    fn string(&mut self) -> Res<String> {
        let n = self.len()?;
        let s = std::str::from_utf8(self.take(n)?).map_err(|_| CommandDecodeError::NotUtf8)?;
        Ok(s.to_owned())
    }

    /// A counted list of items each encoded in at least `min` bytes. The count is checked
    /// against the bytes not owed to enclosing lists before anything is reserved.
    fn list<T>(&mut self, min: usize, mut item: impl FnMut(&mut Self) -> Res<T>) -> Res<Vec<T>> {
        let raw = self.u32()?;
        let avail = self.remaining().saturating_sub(self.owed);
        let n = usize::try_from(raw)
            .ok()
            .filter(|&n| n <= avail / min)
            .ok_or(CommandDecodeError::Count(raw))?;
        let mut v = Vec::with_capacity(n);
        let outer = self.owed;
        for i in 0..n {
            // Cannot overflow: outer + n * min <= remaining (checked above).
            self.owed = outer + (n - 1 - i) * min;
            v.push(item(self)?);
        }
        self.owed = outer;
        Ok(v)
    }

    fn strings(&mut self) -> Res<Vec<String>> {
        self.list(MIN_STR, Self::string)
    }

    fn put(&mut self) -> Res<PutRequest> {
        let key = self.bytes()?;
        let value = self.bytes()?;
        let lease = self.i64()?;
        let [prev_kv, ignore_value, ignore_lease] = self.flags("put flags")?;
        Ok(PutRequest {
            key,
            value,
            lease,
            prev_kv,
            ignore_value,
            ignore_lease,
        })
    }

    fn delete(&mut self) -> Res<DeleteRangeRequest> {
        Ok(DeleteRangeRequest {
            key: self.bytes()?,
            range_end: self.bytes()?,
            prev_kv: self.bool("delete prev_kv flag")?,
        })
    }

    fn range(&mut self) -> Res<RangeRequest> {
        let key = self.bytes()?;
        let range_end = self.bytes()?;
        let limit = self.i64()?;
        let revision = self.i64()?;
        let sort_order = match self.tag("sort order", 2)? {
            0 => SortOrder::None,
            1 => SortOrder::Ascend,
            _ => SortOrder::Descend,
        };
        let sort_target = match self.tag("sort target", 4)? {
            0 => SortTarget::Key,
            1 => SortTarget::Version,
            2 => SortTarget::Create,
            3 => SortTarget::Mod,
            _ => SortTarget::Value,
        };
        let [keys_only, count_only] = self.flags("range flags")?;
        Ok(RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            keys_only,
            count_only,
            min_mod_revision: self.i64()?,
            max_mod_revision: self.i64()?,
            min_create_revision: self.i64()?,
            max_create_revision: self.i64()?,
        })
    }

    fn compare(&mut self) -> Res<Compare> {
        let result = match self.tag("compare result", 3)? {
            0 => CompareResult::Equal,
            1 => CompareResult::Greater,
            2 => CompareResult::Less,
            _ => CompareResult::NotEqual,
        };
        let target = match self.tag("compare target", 4)? {
            0 => CompareTarget::Version(self.i64()?),
            1 => CompareTarget::Create(self.i64()?),
            2 => CompareTarget::Mod(self.i64()?),
            3 => CompareTarget::Value(self.bytes()?),
            _ => CompareTarget::Lease(self.i64()?),
        };
        Ok(Compare {
            result,
            target,
            key: self.bytes()?,
            range_end: self.bytes()?,
        })
    }

    /// A txn at nesting `depth` (1 for a command's own txn).
    fn txn(&mut self, depth: usize) -> Res<TxnRequest> {
        if depth > Command::MAX_TXN_DEPTH {
            return Err(CommandDecodeError::TooDeep);
        }
        let compare = self.list(MIN_COMPARE, Self::compare)?;
        let success = self.list(MIN_OP, |r| r.op(depth))?;
        let failure = self.list(MIN_OP, |r| r.op(depth))?;
        Ok(TxnRequest {
            compare,
            success,
            failure,
        })
    }

    /// One op of a txn at nesting `depth`.
    fn op(&mut self, depth: usize) -> Res<RequestOp> {
        Ok(match self.tag("txn op", OP_TXN)? {
            OP_RANGE => RequestOp::Range(self.range()?),
            OP_PUT => RequestOp::Put(self.put()?),
            OP_DELETE => RequestOp::DeleteRange(self.delete()?),
            _ => RequestOp::Txn(self.txn(depth + 1)?),
        })
    }
}
