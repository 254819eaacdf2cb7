//! What committed entries are applied to on every member: the keyspace with its leases
//! ([`KvState`]), the cluster's member table and the auth store, and their joint snapshot
//! image.
//!
//! While auth is enabled every proposal is checked against the auth store before it runs,
//! as etcd's `applierV3Auth` does: a refused proposal answers [`Outcome::Denied`] and has
//! no effect.
//!
//! Apply is deterministic: every member applying the same entries reaches the same
//! state, so answers computed here are the answers the proposing member returns.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::command::{decode_command, Command, Proposal};
use crate::auth::{
    AuthCommand, AuthDecodeError, AuthError, AuthInfo, AuthOutcome, AuthStore, PermKind,
};
use crate::etcd::backend::Backend;
use crate::mvcc::{
    DeleteRangeResponse, KvState, LeaseError, LeaseId, MvccError, PutRequest, PutResponse,
    RangeRequest, RequestOp, StateDecodeError, TxnRequest, TxnResponse,
};
use crate::raft::{ConfChange, Entry, EntryPayload, Time};

/// One member as `Cluster.MemberList` shows it.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct MemberInfo {
    /// Member ID.
    pub id: u64,
    /// `--name` (empty until the member has published it).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (published by the member once it serves).
    pub client_urls: Vec<String>,
    /// A non-voting member.
    pub learner: bool,
}

/// etcd's alarm types (`etcdserverpb.AlarmType`).
pub mod alarm {
    /// No alarm (matches every alarm in a disarm).
    pub const NONE: i32 = 0;
    /// Backend quota exceeded.
    pub const NOSPACE: i32 = 1;
    /// Data inconsistency detected.
    pub const CORRUPT: i32 = 2;

    /// The alarm's name as etcd prints it.
    pub fn name(kind: i32) -> &'static str {
        match kind {
            NOSPACE => "NOSPACE",
            CORRUPT => "CORRUPT",
            _ => "NONE",
        }
    }
}

/// The result of applying one client command, returned to the member that proposed it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// A put.
    Put(Result<PutResponse, MvccError>),
    /// A delete.
    DeleteRange(Result<DeleteRangeResponse, MvccError>),
    /// A transaction.
    Txn(Result<TxnResponse, MvccError>),
    /// A compaction.
    Compact(Result<(), MvccError>),
    /// A lease grant: (ID, granted TTL).
    LeaseGrant(Result<(i64, i64), LeaseError>),
    /// A lease revoke.
    LeaseRevoke(Result<(), LeaseError>),
    /// Lease checkpoints recorded.
    LeaseCheckpoint,
    /// The alarms raised after an alarm request: (member, alarm type).
    Alarm(Vec<(u64, i32)>),
    /// A membership record change.
    Member,
    /// An auth store change or an Authenticate.
    Auth(Result<AuthOutcome, AuthError>),
    /// The proposal was refused by the permission check at apply; it had no effect.
    Denied(AuthError),
}

/// An applied entry whose proposer waits for the answer.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Applied {
    /// Member that proposed it.
    pub origin: u64,
    /// The proposer's request number.
    pub seq: u64,
    /// The answer.
    pub outcome: Outcome,
}

/// A member's replicated state: keyspace, leases, members, alarms.
#[derive(Clone, Debug)]
pub struct StateMachine {
    /// Keyspace, leases and applied index.
    pub kv: KvState,
    /// Members by ID.
    pub members: BTreeMap<u64, MemberInfo>,
    /// Users, roles and permissions, and whether auth is enabled.
    pub auth: AuthStore,
    /// Raised alarms other than this state's own NOSPACE: (member, type).
    alarms: BTreeMap<(u64, i32), ()>,
    /// Recently applied proposals, oldest first: a proposal delivered twice (a
    /// duplicated forward) is applied once.
    recent: RecentProposals,
    /// Term of the last applied entry (not part of the image: the next entry sets it).
    applied_term: u64,
    /// The term whose leader this member's lessor is primary for, if it is.
    lease_term: Option<u64>,
    quota_bytes: u64,
    min_lease_ttl: i64,
}

/// Proposals remembered for de-duplication. Duplicates arrive within moments of the
/// original, so a bounded window suffices.
const RECENT_PROPOSALS: usize = 8192;

/// The (origin, request number) pairs of the last [`RECENT_PROPOSALS`] applied proposals.
#[derive(Clone, Debug, Default)]
struct RecentProposals {
    order: std::collections::VecDeque<(u64, u64)>,
    set: std::collections::BTreeSet<(u64, u64)>,
}

impl RecentProposals {
    /// Records a proposal; false if it was already applied.
    fn insert(&mut self, origin: u64, seq: u64) -> bool {
        if !self.set.insert((origin, seq)) {
            return false;
        }
        self.order.push_back((origin, seq));
        if self.order.len() > RECENT_PROPOSALS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

const MAGIC: &[u8; 8] = b"KEELND01";

/// A node snapshot image that cannot be restored.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum NodeImageError {
    /// Not a Keel node image.
    #[error("node snapshot: bad magic")]
    BadMagic,
    /// The checksum does not match.
    #[error("node snapshot: checksum mismatch")]
    Checksum,
    /// The member table does not parse.
    #[error("node snapshot: malformed member table")]
    Malformed,
    /// The keyspace image is bad.
    #[error(transparent)]
    State(#[from] StateDecodeError),
    /// The auth store image is bad.
    #[error(transparent)]
    Auth(#[from] AuthDecodeError),
}

/// etcd's simple token is the proposer's random prefix and the raft index of its
/// Authenticate entry (`"%s.%d"`): a member asked with it before applying that entry
/// knows what to wait for. An empty token (JWT, signed by the answering member) stays
/// empty.
fn index_token(o: AuthOutcome, index: u64) -> AuthOutcome {
    match o {
        AuthOutcome::Authenticated {
            name,
            token,
            revision,
        } if !token.is_empty() => AuthOutcome::Authenticated {
            name,
            token: format!("{token}.{index}"),
            revision,
        },
        o => o,
    }
}

impl StateMachine {
    /// An empty state whose member table holds the founding members.
    pub fn new(
        quota_bytes: u64,
        min_lease_ttl: i64,
        members: impl IntoIterator<Item = MemberInfo>,
    ) -> StateMachine {
        StateMachine {
            kv: KvState::new(quota_bytes, min_lease_ttl),
            members: members.into_iter().map(|m| (m.id, m)).collect(),
            auth: AuthStore::new(),
            alarms: BTreeMap::new(),
            recent: RecentProposals::default(),
            applied_term: 0,
            lease_term: None,
            quota_bytes,
            min_lease_ttl,
        }
    }

    /// A copy of what etcd's backend would hold of this state, to write out as an etcd
    /// database away from the member: the keyspace index is cloned (values are shared,
    /// not copied), NOSPACE reported against `local_member`.
    pub fn backend_view(&self, local_member: u64) -> Backend {
        Backend {
            store: self.kv.store.clone(),
            leases: self.kv.lessor.export(),
            auth: self.auth.clone(),
            members: self.members.values().cloned().collect(),
            alarms: self.alarms(local_member),
            consistent_index: self.kv.applied,
        }
    }

    /// A state rebuilt from an etcd backend as `etcdctl snapshot restore` rebuilds one:
    /// keyspace, leases, auth and alarms kept, the member table replaced by `members`,
    /// applied up to `applied`.
    pub fn from_backend(
        backend: Backend,
        members: impl IntoIterator<Item = MemberInfo>,
        applied: u64,
        quota_bytes: u64,
        min_lease_ttl: i64,
    ) -> StateMachine {
        let mut sm = StateMachine::new(quota_bytes, min_lease_ttl, members);
        sm.kv = KvState::from_store(
            backend.store,
            &backend.leases,
            applied,
            quota_bytes,
            min_lease_ttl,
        );
        sm.auth = backend.auth;
        sm.alarms = backend.alarms.into_iter().map(|a| (a, ())).collect();
        sm
    }

    /// Index of the last applied entry.
    pub fn applied(&self) -> u64 {
        self.kv.applied
    }

    /// Makes the lessor follow leadership, as etcd's does; call after applying, with
    /// `leading` the term this member leads in (None if it does not lead). Only a leader's
    /// lessor tracks expiry and renews leases, and it becomes primary (every lease gets a
    /// fresh TTL plus `extend_ms`, for the election) only once it has applied an entry of
    /// its own term, which implies it has applied every entry earlier leaders committed:
    /// until then it may miss the revocation of a lease an earlier leader committed, and
    /// renewing that lease tells its client it lives a TTL more just before its
    /// keys are deleted (found by the simulator, seed 1065). etcd promotes its lessor
    /// when the leader applies its term's empty entry, for the same reason. A new term
    /// demotes first: a lessor primary for an earlier term is stale too.
    pub fn track_leadership(&mut self, leading: Option<u64>, now: Time, extend_ms: u64) {
        if self.lease_term.is_some() && self.lease_term != leading {
            self.kv.lessor.demote();
            self.lease_term = None;
        }
        if let Some(term) = leading {
            if self.lease_term.is_none() && self.applied_term == term {
                self.kv.lessor.promote(now, extend_ms);
                self.lease_term = Some(term);
            }
        }
    }

    /// Alarms raised, as `AlarmList` reports them. NOSPACE is reported against
    /// `local_member` (every member's keyspace reaches the quota at the same entry).
    pub fn alarms(&self, local_member: u64) -> Vec<(u64, i32)> {
        let mut out: Vec<(u64, i32)> = self.alarms.keys().copied().collect();
        if self.kv.nospace_alarm() && !out.iter().any(|a| a.1 == alarm::NOSPACE) {
            out.push((local_member, alarm::NOSPACE));
        }
        out.sort_unstable();
        out
    }

    /// Applies one committed entry. Returns the answer for its proposer, if it is a client
    /// command. A payload that does not decode (only a bug or a hostile leader could put
    /// one in the log) is skipped on every member alike, so states stay identical.
    pub fn apply(&mut self, entry: &Entry, now: Time) -> Option<Applied> {
        self.kv.applied = entry.index.0;
        self.applied_term = entry.term.0;
        match &entry.payload {
            EntryPayload::Empty => None,
            EntryPayload::ConfChange(cc) => {
                self.apply_conf_change(*cc);
                None
            }
            EntryPayload::Normal(data) => {
                let p = decode_command(data).ok()?;
                // Applied already (the same proposal delivered twice): no second effect,
                // and no second answer.
                if !self.recent.insert(p.origin, p.seq) {
                    return None;
                }
                Some(self.apply_proposal(p, now))
            }
        }
    }

    fn apply_conf_change(&mut self, cc: ConfChange) {
        match cc {
            ConfChange::AddVoter(id) => {
                self.members.entry(id.0).or_default().learner = false;
                self.members.entry(id.0).or_default().id = id.0;
            }
            ConfChange::AddLearner(id) => {
                let m = self.members.entry(id.0).or_default();
                m.id = id.0;
                m.learner = true;
            }
            ConfChange::Remove(id) => {
                self.members.remove(&id.0);
            }
        }
    }

    /// etcd's `applierV3Auth` checks: may `who` run `cmd`? Always Ok while auth is
    /// disabled. Put: write on the key, read too with `prev_kv`, and write on every key
    /// already attached to its lease; DeleteRange: write on the range, read too with
    /// `prev_kv`; Txn: read on every compare and range, write on every put and delete
    /// (read too for a delete with `prev_kv`), in both branches and nested txns;
    /// LeaseRevoke: write on every attached key; auth changes: the root role;
    /// Authenticate, Compact (etcd 3.4 lets any user compact, and the auto-compactor
    /// proposes without a user), LeaseGrant, alarms and member records: nothing.
    pub fn authorize(&self, who: Option<&AuthInfo>, cmd: &Command) -> Result<(), AuthError> {
        if !self.auth.enabled() {
            return Ok(());
        }
        match cmd {
            Command::Put(r) => self.authorize_put(who, r),
            Command::DeleteRange(r) => {
                self.auth
                    .check(who, &r.key, &r.range_end, PermKind::Write)?;
                if r.prev_kv {
                    self.auth.check(who, &r.key, &r.range_end, PermKind::Read)?;
                }
                Ok(())
            }
            Command::Txn(t) => self.authorize_txn(who, t),
            Command::LeaseRevoke { id } => self.authorize_lease_keys(who, *id),
            Command::Auth(AuthCommand::Authenticate { .. }) => Ok(()),
            Command::Auth(_) => self.auth.check_admin(who),
            Command::Compact { .. }
            | Command::LeaseGrant { .. }
            | Command::LeaseCheckpoint { .. }
            | Command::Alarm { .. }
            | Command::PublishMember { .. }
            | Command::UpdateMember { .. }
            | Command::AddMember { .. } => Ok(()),
        }
    }

    /// May `who` read `r`'s range (etcd's `IsRangePermitted`)? Ok while auth is disabled.
    pub fn authorize_range(
        &self,
        who: Option<&AuthInfo>,
        r: &RangeRequest,
    ) -> Result<(), AuthError> {
        self.auth.check(who, &r.key, &r.range_end, PermKind::Read)
    }

    fn authorize_put(&self, who: Option<&AuthInfo>, r: &PutRequest) -> Result<(), AuthError> {
        self.auth.check(who, &r.key, &[], PermKind::Write)?;
        if r.lease != 0 {
            // etcd's checkLeasePuts: a user who could not revoke the lease (for a key
            // attached to it that they may not write) may not attach more keys to it.
            self.authorize_lease_keys(who, r.lease)?;
        }
        if r.prev_kv {
            self.auth.check(who, &r.key, &[], PermKind::Read)?;
        }
        Ok(())
    }

    fn authorize_lease_keys(&self, who: Option<&AuthInfo>, id: i64) -> Result<(), AuthError> {
        for key in self.kv.store.lease_keys(id) {
            self.auth.check(who, &key, &[], PermKind::Write)?;
        }
        Ok(())
    }

    /// etcd's checkTxnAuth: compares, then both branches (recursing into nested txns,
    /// whose depth the decoder bounds).
    /// May `who` run transaction `t` (see [`StateMachine::authorize`])?
    pub fn authorize_txn(&self, who: Option<&AuthInfo>, t: &TxnRequest) -> Result<(), AuthError> {
        for c in &t.compare {
            self.auth.check(who, &c.key, &c.range_end, PermKind::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => self.authorize_range(who, r)?,
                RequestOp::Put(r) => self.auth.check(who, &r.key, &[], PermKind::Write)?,
                RequestOp::DeleteRange(r) => {
                    if r.prev_kv {
                        self.auth.check(who, &r.key, &r.range_end, PermKind::Read)?;
                    }
                    self.auth
                        .check(who, &r.key, &r.range_end, PermKind::Write)?;
                }
                RequestOp::Txn(inner) => self.authorize_txn(who, inner)?,
            }
        }
        Ok(())
    }

    /// Whether the CORRUPT alarm is raised (by any member: etcd raises it against 0).
    pub fn corrupt(&self) -> bool {
        self.alarms.keys().any(|(_, kind)| *kind == alarm::CORRUPT)
    }

    /// etcd's `applierV3Corrupt`: while CORRUPT is raised, what would change the
    /// keyspace or the leases is refused at apply, before the permission check. Reads,
    /// alarms (so it can be disarmed), auth and membership go on.
    fn refused_as_corrupt(cmd: &Command) -> Option<Outcome> {
        Some(match cmd {
            Command::Put(_) => Outcome::Put(Err(MvccError::Corrupt)),
            Command::DeleteRange(_) => Outcome::DeleteRange(Err(MvccError::Corrupt)),
            Command::Txn(_) => Outcome::Txn(Err(MvccError::Corrupt)),
            Command::Compact { .. } => Outcome::Compact(Err(MvccError::Corrupt)),
            Command::LeaseGrant { .. } => Outcome::LeaseGrant(Err(LeaseError::Corrupt)),
            Command::LeaseRevoke { .. } => Outcome::LeaseRevoke(Err(LeaseError::Corrupt)),
            _ => return None,
        })
    }

    fn apply_proposal(&mut self, p: Proposal, now: Time) -> Applied {
        if let Some(outcome) = self
            .corrupt()
            .then(|| Self::refused_as_corrupt(&p.cmd))
            .flatten()
        {
            return Applied {
                origin: p.origin,
                seq: p.seq,
                outcome,
            };
        }
        if let Err(e) = self.authorize(p.auth.as_ref(), &p.cmd) {
            return Applied {
                origin: p.origin,
                seq: p.seq,
                outcome: Outcome::Denied(e),
            };
        }
        let outcome = match p.cmd {
            Command::Put(r) => Outcome::Put(self.kv.put(&r)),
            Command::DeleteRange(r) => Outcome::DeleteRange(self.kv.store.delete_range(&r)),
            Command::Txn(t) => Outcome::Txn(self.kv.txn(&t)),
            Command::Compact { revision, .. } => Outcome::Compact(self.kv.store.compact(revision)),
            Command::LeaseGrant { id, ttl } => {
                let r = self.kv.lessor.grant(LeaseId(id), ttl, now);
                if r.is_ok() {
                    self.kv.store.grant_lease(id);
                }
                Outcome::LeaseGrant(r.map(|ttl| (id, ttl)))
            }
            Command::LeaseRevoke { id } => {
                let r = self.kv.lessor.revoke(LeaseId(id));
                if r.is_ok() {
                    // The keyspace knows the lease iff the lessor did; its error is moot.
                    let _ = self.kv.store.revoke_lease(id);
                }
                Outcome::LeaseRevoke(r)
            }
            Command::LeaseCheckpoint { checkpoints } => {
                for (id, remaining) in checkpoints {
                    self.kv.lessor.checkpoint(LeaseId(id), remaining);
                }
                Outcome::LeaseCheckpoint
            }
            Command::Alarm {
                action,
                member,
                alarm: kind,
            } => {
                // As etcd's applier: an activation or deactivation answers with the
                // alarm it changed (`etcdctl alarm disarm` prints it).
                match action {
                    1 if kind != alarm::NONE => {
                        self.alarms.insert((member, kind), ());
                        Outcome::Alarm(vec![(member, kind)])
                    }
                    2 => {
                        let gone = |(m, a): &(u64, i32)| *m == member && (kind == 0 || *a == kind);
                        let mut removed: Vec<(u64, i32)> =
                            self.alarms.keys().filter(|k| gone(k)).copied().collect();
                        self.alarms.retain(|k, _| !gone(k));
                        if kind == alarm::NOSPACE || kind == alarm::NONE {
                            // The quota's own alarm is listed under the member asked.
                            if self.kv.nospace_alarm()
                                && !removed.iter().any(|a| a.1 == alarm::NOSPACE)
                            {
                                removed.push((member, alarm::NOSPACE));
                            }
                            self.kv.disarm_nospace();
                        }
                        Outcome::Alarm(removed)
                    }
                    _ => Outcome::Alarm(self.alarms(member)),
                }
            }
            Command::PublishMember {
                id,
                name,
                client_urls,
            } => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.name = name;
                    m.client_urls = client_urls;
                }
                Outcome::Member
            }
            Command::UpdateMember { id, peer_urls } => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.peer_urls = peer_urls;
                }
                Outcome::Member
            }
            Command::AddMember {
                id,
                peer_urls,
                learner,
            } => {
                let m = self.members.entry(id).or_default();
                m.id = id;
                m.peer_urls = peer_urls;
                m.learner = learner;
                Outcome::Member
            }
            Command::Auth(a) => {
                let index = self.kv.applied;
                Outcome::Auth(self.auth.apply(&a).map(|o| index_token(o, index)))
            }
        };
        Applied {
            origin: p.origin,
            seq: p.seq,
            outcome,
        }
    }

    /// The whole replicated state as one checksummed image (raft snapshots carry it).
    pub fn snapshot(&self) -> Bytes {
        let kv = self.kv.snapshot();
        let mut w = Vec::with_capacity(kv.len() + 256);
        w.extend_from_slice(MAGIC);
        w.extend_from_slice(&(kv.len() as u64).to_le_bytes());
        w.extend_from_slice(&kv);
        write_members(&mut w, self.members.values());
        put_u32(&mut w, self.alarms.len() as u32);
        for (m, a) in self.alarms.keys() {
            w.extend_from_slice(&m.to_le_bytes());
            w.extend_from_slice(&a.to_le_bytes());
        }
        put_u32(&mut w, self.recent.order.len() as u32);
        for (origin, seq) in &self.recent.order {
            w.extend_from_slice(&origin.to_le_bytes());
            w.extend_from_slice(&seq.to_le_bytes());
        }
        self.auth.encode(&mut w);
        let crc = crc32fast::hash(&w);
        w.extend_from_slice(&crc.to_le_bytes());
        Bytes::from(w)
    }

    /// Rebuilds a state from [`StateMachine::snapshot`]; never panics on bad input.
    pub fn restore(
        image: &[u8],
        quota_bytes: u64,
        min_lease_ttl: i64,
    ) -> Result<StateMachine, NodeImageError> {
        if image.len() < 20 || &image[..8] != MAGIC {
            return Err(NodeImageError::BadMagic);
        }
        let (body, crc) = image.split_at(image.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(NodeImageError::Checksum);
        }
        let mut r = Reader { b: &body[8..] };
        let kv_len = usize::try_from(r.u64()?).map_err(|_| NodeImageError::Malformed)?;
        let kv = KvState::restore(r.take(kv_len)?, quota_bytes, min_lease_ttl)?;
        let members = read_members(&mut r)?
            .into_iter()
            .map(|m| (m.id, m))
            .collect();
        let mut alarms = BTreeMap::new();
        for _ in 0..r.u32()? {
            let m = u64::from_le_bytes(r.array()?);
            let a = i32::from_le_bytes(r.array()?);
            alarms.insert((m, a), ());
        }
        let mut recent = RecentProposals::default();
        // Images written before de-duplication end here.
        if !r.b.is_empty() {
            for _ in 0..r.u32()? {
                let origin = u64::from_le_bytes(r.array()?);
                let seq = u64::from_le_bytes(r.array()?);
                recent.insert(origin, seq);
            }
        }
        // Images written before the auth store end here.
        let mut auth = AuthStore::new();
        if !r.b.is_empty() {
            let (store, used) = AuthStore::decode(r.b)?;
            auth = store;
            r.take(used)?;
        }
        if !r.b.is_empty() {
            return Err(NodeImageError::Malformed);
        }
        Ok(StateMachine {
            kv,
            members,
            auth,
            alarms,
            recent,
            applied_term: 0,
            lease_term: None,
            quota_bytes,
            min_lease_ttl,
        })
    }

    /// Replaces this state with a snapshot image from the leader, keeping this member's
    /// local settings (quota, minimum lease TTL, `--max-txn-ops`) and operation counts.
    pub fn install(&mut self, image: &[u8]) -> Result<(), NodeImageError> {
        let max_txn_ops = self.kv.store.max_txn_ops();
        let ops = self.kv.store.op_counts();
        *self = StateMachine::restore(image, self.quota_bytes, self.min_lease_ttl)?;
        self.kv.store.set_max_txn_ops(max_txn_ops);
        self.kv.store.keep_op_counts(ops);
        Ok(())
    }
}

/// Appends the member table in its binary form: the layout inside snapshot images, also
/// used by the peer port's member-list answer.
pub fn write_members<'a>(w: &mut Vec<u8>, members: impl ExactSizeIterator<Item = &'a MemberInfo>) {
    put_u32(w, members.len() as u32);
    for m in members {
        w.extend_from_slice(&m.id.to_le_bytes());
        w.push(u8::from(m.learner));
        put_str(w, &m.name);
        put_strs(w, &m.peer_urls);
        put_strs(w, &m.client_urls);
    }
}

/// Parses exactly one member table written by [`write_members`]; never panics on bad input.
pub fn decode_members(b: &[u8]) -> Result<Vec<MemberInfo>, NodeImageError> {
    let mut r = Reader { b };
    let members = read_members(&mut r)?;
    if !r.b.is_empty() {
        return Err(NodeImageError::Malformed);
    }
    Ok(members)
}

fn read_members(r: &mut Reader<'_>) -> Result<Vec<MemberInfo>, NodeImageError> {
    let n = r.u32()?;
    // Each iteration consumes at least a member's fixed part or fails: no count-sized
    // allocation up front.
    let mut members = Vec::new();
    for _ in 0..n {
        let id = u64::from_le_bytes(r.array()?);
        let learner = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(NodeImageError::Malformed),
        };
        members.push(MemberInfo {
            id,
            learner,
            name: r.string()?,
            peer_urls: r.strings()?,
            client_urls: r.strings()?,
        });
    }
    Ok(members)
}

fn put_u32(w: &mut Vec<u8>, v: u32) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    put_u32(w, s.len() as u32);
    w.extend_from_slice(s.as_bytes());
}

fn put_strs(w: &mut Vec<u8>, v: &[String]) {
    put_u32(w, v.len() as u32);
    for s in v {
        put_str(w, s);
    }
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], NodeImageError> {
        if n > self.b.len() {
            return Err(NodeImageError::Malformed);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], NodeImageError> {
        self.take(N)?
            .try_into()
            .map_err(|_| NodeImageError::Malformed)
    }

    fn u32(&mut self) -> Result<u32, NodeImageError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, NodeImageError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String, NodeImageError> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| NodeImageError::Malformed)
    }

    fn strings(&mut self) -> Result<Vec<String>, NodeImageError> {
        let n = self.u32()? as usize;
        // Each string takes at least its 4-byte length: a count beyond that is corrupt.
        if n > self.b.len() / 4 {
            return Err(NodeImageError::Malformed);
        }
        (0..n).map(|_| self.string()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::PutRequest;
    use crate::node::encode_command;
    use crate::raft::{LogIndex, Term};

    fn command_entry(index: u64, term: u64, seq: u64, cmd: Command) -> Entry {
        Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Normal(
                encode_command(&Proposal {
                    origin: 1,
                    seq,
                    auth: None,
                    cmd,
                })
                .into(),
            ),
        }
    }

    #[test]
    fn a_new_leader_renews_leases_only_after_applying_an_entry_of_its_term() {
        // Found by the simulator (seed 1065): a member elected in term 4 had the term-2
        // revocation of a lease in its log, committed by the old leader but not yet known
        // committed here; its lessor, promoted on election, renewed the lease (the client
        // was told 2 s more) and the revocation was applied 83 ms later.
        use crate::mvcc::LeaseError;
        let mut sm = StateMachine::new(u64::MAX, 1, []);
        let grant = Command::LeaseGrant { id: 7, ttl: 2 };
        sm.apply(&command_entry(1, 2, 1, grant), Time(0));
        sm.track_leadership(Some(4), Time(5_000), 1_000);
        assert_eq!(
            sm.kv.lessor.renew(LeaseId(7), Time(5_000)),
            Err(LeaseError::NotPrimary),
            "entries of earlier terms may be unapplied: no renewal yet"
        );
        sm.apply(
            &command_entry(2, 2, 2, Command::LeaseRevoke { id: 7 }),
            Time(5_100),
        );
        sm.track_leadership(Some(4), Time(5_100), 1_000);
        assert_eq!(
            sm.kv.lessor.renew(LeaseId(7), Time(5_100)),
            Err(LeaseError::NotPrimary)
        );
        let empty = Entry {
            term: Term(4),
            index: LogIndex(3),
            payload: EntryPayload::Empty,
        };
        sm.apply(&empty, Time(5_200));
        sm.track_leadership(Some(4), Time(5_200), 1_000);
        assert_eq!(
            sm.kv.lessor.renew(LeaseId(7), Time(5_200)),
            Err(LeaseError::NotFound),
            "primary now, and the lease is gone"
        );
        sm.apply(
            &command_entry(4, 4, 3, Command::LeaseGrant { id: 8, ttl: 2 }),
            Time(5_300),
        );
        assert_eq!(sm.kv.lessor.renew(LeaseId(8), Time(5_300)), Ok(2));
        // Leading again in a later term (no step down seen in between): demoted until
        // that term's entry is applied.
        sm.track_leadership(Some(6), Time(6_000), 1_000);
        assert_eq!(
            sm.kv.lessor.renew(LeaseId(8), Time(6_000)),
            Err(LeaseError::NotPrimary)
        );
        sm.track_leadership(None, Time(6_000), 1_000);
        assert!(!sm.kv.lessor.is_primary());
    }

    fn put_entry(index: u64, origin: u64, seq: u64) -> Entry {
        let cmd = Command::Put(PutRequest {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
            ..Default::default()
        });
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Normal(
                encode_command(&Proposal {
                    origin,
                    seq,
                    auth: None,
                    cmd,
                })
                .into(),
            ),
        }
    }

    #[test]
    fn a_proposal_committed_twice_is_applied_once_even_across_a_snapshot() {
        // Found by the simulator (a duplicated forward of a proposal): the put was applied
        // twice, and a get saw version 2 of a key written once.
        let mut sm = StateMachine::new(u64::MAX, 1, []);
        assert!(sm.apply(&put_entry(1, 7, 100), Time(0)).is_some());
        assert!(
            sm.apply(&put_entry(2, 7, 100), Time(0)).is_none(),
            "duplicate"
        );
        assert!(
            sm.apply(&put_entry(3, 8, 100), Time(0)).is_some(),
            "other origin"
        );
        let mut restored = StateMachine::restore(&sm.snapshot(), u64::MAX, 1).expect("image");
        assert!(restored.apply(&put_entry(4, 8, 100), Time(0)).is_none());
        assert!(restored.apply(&put_entry(5, 7, 101), Time(0)).is_some());
        assert_eq!(restored.kv.store.revision(), 1 + 3, "three distinct puts");
    }

    #[test]
    fn under_the_corrupt_alarm_writes_are_refused_and_the_alarm_can_still_change() {
        // etcd's applierV3Corrupt: puts, deletes, txns, compactions and lease grants and
        // revokes answer "etcdserver: corrupt cluster" and change nothing.
        let mut sm = StateMachine::new(u64::MAX, 1, []);
        let put = |key: &str| {
            Command::Put(PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: b"v".to_vec().into(),
                ..Default::default()
            })
        };
        let outcome = |sm: &mut StateMachine, i: u64, cmd: Command| {
            sm.apply(&command_entry(i, 1, i, cmd), Time(0))
                .map(|a| a.outcome)
        };
        assert!(matches!(
            outcome(&mut sm, 1, put("a")),
            Some(Outcome::Put(Ok(_)))
        ));
        let raise = super::super::corruption::corrupt_alarm();
        assert_eq!(
            outcome(&mut sm, 2, raise),
            Some(Outcome::Alarm(vec![(0, alarm::CORRUPT)]))
        );
        assert!(sm.corrupt());
        let rev = sm.kv.store.revision();
        let refused = [
            (put("b"), Outcome::Put(Err(MvccError::Corrupt))),
            (
                Command::DeleteRange(Default::default()),
                Outcome::DeleteRange(Err(MvccError::Corrupt)),
            ),
            (
                Command::Txn(Default::default()),
                Outcome::Txn(Err(MvccError::Corrupt)),
            ),
            (
                Command::Compact {
                    revision: 1,
                    physical: false,
                },
                Outcome::Compact(Err(MvccError::Corrupt)),
            ),
            (
                Command::LeaseGrant { id: 5, ttl: 10 },
                Outcome::LeaseGrant(Err(LeaseError::Corrupt)),
            ),
            (
                Command::LeaseRevoke { id: 5 },
                Outcome::LeaseRevoke(Err(LeaseError::Corrupt)),
            ),
        ];
        for (i, (cmd, want)) in refused.into_iter().enumerate() {
            assert_eq!(outcome(&mut sm, 3 + i as u64, cmd), Some(want));
        }
        assert_eq!(sm.kv.store.revision(), rev, "nothing written");
        assert_eq!(
            MvccError::Corrupt.to_string(),
            "etcdserver: corrupt cluster"
        );
        assert_eq!(
            LeaseError::Corrupt.to_string(),
            "etcdserver: corrupt cluster"
        );
        // The alarm survives a snapshot, and disarming it lets writes through again.
        let mut sm = StateMachine::restore(&sm.snapshot(), u64::MAX, 1).expect("image");
        assert!(sm.corrupt());
        let disarm = Command::Alarm {
            action: 2,
            member: 0,
            alarm: alarm::CORRUPT,
        };
        assert_eq!(
            outcome(&mut sm, 20, disarm),
            Some(Outcome::Alarm(vec![(0, alarm::CORRUPT)]))
        );
        assert!(matches!(
            outcome(&mut sm, 21, put("c")),
            Some(Outcome::Put(Ok(_)))
        ));
    }
}
