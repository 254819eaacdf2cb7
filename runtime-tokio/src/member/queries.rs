//! The member's reads, typed, for the services: handlers ask for a range, a member list,
//! a lease's TTL, a view of the auth store or of the keyspace, and get values back. Every
//! closure over the member task's state lives in this file, so that serving reads from a
//! snapshot of the keyspace (off the member task) changes this file and no handler.

use bytes::Bytes;
use keel_core::auth::{AuthAnswer, AuthError, AuthInfo, AuthQuery};
use keel_core::etcd::backend::Backend;
use keel_core::mvcc::{
    LeaseError, LeaseId, MvccError, ProgressFor, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse, WatchRequest,
};
use keel_core::node::MemberInfo;

use crate::v2keys::auth::stored::{
    self as v2_auth, AccessView as V2AccessView, Image as V2AuthImage,
};
use crate::v2keys::json::Event as V2Event;
use crate::v2keys::store::{self as v2_store, Plan as V2Plan, V2Error, Write as V2Write};

use super::{Header, MemberHandle, MemberTask, ServerError, WatchSink};

/// Why a read was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadRefused {
    /// The caller may not read this.
    Denied(AuthError),
    /// The keyspace refused it (compacted or future revision, ...).
    Mvcc(MvccError),
}

/// How [`MemberHandle::watch_since`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchStart {
    /// The watcher exists.
    Created {
        /// Its ID.
        id: i64,
        /// The keyspace revision when it was created.
        revision: i64,
        /// The applied index then.
        applied: u64,
        /// The raft term then.
        term: u64,
    },
    /// The history asked for is compacted.
    Compacted {
        /// The compacted revision.
        compacted: i64,
        /// The keyspace revision.
        revision: i64,
    },
}

/// What `Status` reports of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusView {
    /// The header as of now.
    pub header: Header,
    /// The state's size in bytes (etcd's dbSize).
    pub db_size: i64,
    /// Current leader (0: none).
    pub leader: u64,
    /// Raft's commit index.
    pub raft_index: u64,
    /// Raft's term.
    pub raft_term: u64,
    /// Applied index.
    pub applied: u64,
    /// Raised alarms: (member, type).
    pub alarms: Vec<(u64, i32)>,
    /// Whether this member is a learner.
    pub is_learner: bool,
}

/// What a lease's TTL query finds on this member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// This member's lessor tracks expiry (it is the leader's).
    pub primary: bool,
    /// (granted TTL, remaining TTL), or why not.
    pub ttl: Result<(i64, i64), LeaseError>,
    /// Keys attached, if asked for.
    pub keys: Vec<Bytes>,
    /// The header as of now.
    pub header: Header,
}

impl MemberHandle {
    /// A range as `who`.
    pub async fn range(
        &self,
        linearizable: bool,
        r: RangeRequest,
        who: Option<AuthInfo>,
    ) -> Result<(Result<RangeResponse, ReadRefused>, Header), ServerError> {
        self.read(linearizable, move |c: &mut MemberTask| {
            let sm = &mut c.member.sm;
            let res = match sm.authorize_range(who.as_ref(), &r) {
                Ok(()) => sm.kv.store.serve_range(&r).map_err(ReadRefused::Mvcc),
                Err(e) => Err(ReadRefused::Denied(e)),
            };
            (res, c.header())
        })
        .await
    }

    /// A read-only transaction as `who`, linearizably.
    pub async fn txn_read(
        &self,
        t: TxnRequest,
        who: Option<AuthInfo>,
    ) -> Result<(Result<TxnResponse, ReadRefused>, Header), ServerError> {
        self.read(true, move |c: &mut MemberTask| {
            let sm = &mut c.member.sm;
            let res = match sm.authorize_txn(who.as_ref(), &t) {
                Err(e) => Err(ReadRefused::Denied(e)),
                Ok(()) => sm.kv.txn(&t).map_err(ReadRefused::Mvcc),
            };
            (res, c.header())
        })
        .await
    }

    /// The member table.
    pub async fn members(
        &self,
        linearizable: bool,
    ) -> Result<(Vec<MemberInfo>, Header), ServerError> {
        self.read(linearizable, |c: &mut MemberTask| {
            let members = c.member.sm.members.values().cloned().collect();
            (members, c.header())
        })
        .await
    }

    /// The raised alarms, as replicated (the local copy is what etcd reads too).
    pub async fn alarms(&self) -> Result<Vec<(u64, i32)>, ServerError> {
        self.local(|c: &mut MemberTask| c.member.sm.alarms(c.id))
            .await
    }

    /// What `Status` reports.
    pub async fn status_view(&self) -> Result<StatusView, ServerError> {
        self.local(|c: &mut MemberTask| {
            let (m, id) = (&c.member, c.id);
            StatusView {
                header: m.header(),
                db_size: m.sm.kv.size_bytes() as i64,
                leader: m.raft.leader().0,
                raft_index: m.raft.committed().0,
                raft_term: m.raft.term().0,
                applied: m.sm.applied(),
                alarms: m.sm.alarms(id),
                is_learner: m.sm.members.get(&id).is_some_and(|x| x.learner),
            }
        })
        .await
    }

    /// The hash of the whole state (etcd's `Hash`).
    pub async fn state_hash(&self) -> Result<(u32, Header), ServerError> {
        self.local(|c: &mut MemberTask| (c.member.sm.kv.hash(), c.header()))
            .await
    }

    /// The keyspace's hash up to `revision`, and the compacted revision.
    pub async fn hash_kv(
        &self,
        revision: i64,
    ) -> Result<(Result<u32, MvccError>, i64, Header), ServerError> {
        self.local(move |c: &mut MemberTask| {
            let kv = &c.member.sm.kv.store;
            (kv.hash_kv(revision), kv.compacted_revision(), c.header())
        })
        .await
    }

    /// A copy of what etcd's backend would hold (for the Snapshot RPC): the index is
    /// cloned on the member task, the values shared.
    pub async fn backend_view(&self) -> Result<Backend, ServerError> {
        self.local(|c: &mut MemberTask| c.member.sm.backend_view(c.id))
            .await
    }

    /// Starts handing leadership to `target` (this member must lead).
    pub async fn move_leader(&self, target: u64) -> Result<(), ServerError> {
        self.local(move |c: &mut MemberTask| {
            let now = c.clock.now();
            c.member.move_leader(now, target)
        })
        .await?
    }

    /// Renews lease `id` on this member's lessor: its TTL, or why not.
    pub async fn renew_lease(
        &self,
        id: LeaseId,
    ) -> Result<(Result<i64, LeaseError>, Header), ServerError> {
        self.local(move |c: &mut MemberTask| {
            let now = c.clock.now();
            (c.member.renew_lease(now, id), c.header())
        })
        .await
    }

    /// Lease `id` as this member's lessor sees it.
    pub async fn lease_view(&self, id: LeaseId, keys: bool) -> Result<LeaseView, ServerError> {
        self.local(move |c: &mut MemberTask| {
            let now = c.clock.now();
            let sm = &c.member.sm;
            LeaseView {
                primary: sm.kv.lessor.is_primary(),
                ttl: sm.kv.lessor.time_to_live(id, now),
                keys: if keys {
                    sm.kv.store.lease_keys(id.0)
                } else {
                    Vec::new()
                },
                header: c.header(),
            }
        })
        .await
    }

    /// A fresh lease ID.
    pub async fn new_lease_id(&self) -> Result<LeaseId, ServerError> {
        self.local(|c: &mut MemberTask| c.member.new_lease_id())
            .await
    }

    /// Every lease's ID, linearizably.
    pub async fn lease_ids(&self) -> Result<(Vec<LeaseId>, Header), ServerError> {
        self.read(true, |c: &mut MemberTask| {
            (c.member.sm.kv.lessor.ids(), c.header())
        })
        .await
    }

    /// The answer to `q` asked of the auth store on behalf of `who` (linearizably:
    /// after a ReadIndex), with the header; the inner error is the refusal.
    pub async fn auth_query(
        &self,
        linearizable: bool,
        who: Option<AuthInfo>,
        q: AuthQuery,
    ) -> Result<(Result<AuthAnswer, AuthError>, Header), ServerError> {
        self.read(linearizable, move |c: &mut MemberTask| {
            (q.answer(&c.member.sm.auth, who.as_ref()), c.header())
        })
        .await
    }

    /// This member's applied index and term, as served now (not linearizable).
    pub async fn raft_position(&self) -> Result<(u64, u64), ServerError> {
        self.local(|c: &mut MemberTask| c.raft_position()).await
    }

    /// The v2 keys API's GET of `path` over the keyspace (linearizably): the event, the
    /// revision it was read at, and the applied index and term.
    pub(crate) async fn v2_get(
        &self,
        path: String,
        recursive: bool,
        sorted: bool,
    ) -> Result<(Result<V2Event, V2Error>, i64, (u64, u64)), ServerError> {
        self.read(true, move |c: &mut MemberTask| {
            let kv = &c.member.sm.kv.store;
            let got = v2_store::get(kv, &path, recursive, sorted);
            (got, kv.revision(), c.raft_position())
        })
        .await
    }

    /// The v2 keys API's plan for writing `w` at `path`: a txn that succeeds only if
    /// the keyspace is still as read here (linearizably).
    pub(crate) async fn v2_plan(
        &self,
        path: String,
        w: V2Write,
    ) -> Result<Result<V2Plan, V2Error>, ServerError> {
        self.read(true, move |c: &mut MemberTask| {
            v2_store::plan(&c.member.sm.kv.store, &path, &w)
        })
        .await
    }

    /// What checking a v2 request of user `name` (None: a guest) needs, from this
    /// member's state as applied (etcd reads it from its local v2 store).
    pub(crate) async fn v2_auth_access(
        &self,
        name: Option<String>,
    ) -> Result<V2AccessView, ServerError> {
        self.read(false, move |c: &mut MemberTask| {
            v2_auth::access_view(&c.member.sm.kv.store, name.as_deref())
        })
        .await
    }

    /// The whole v2 auth store (linearizably, before a change is decided on it).
    pub(crate) async fn v2_auth_image(
        &self,
        linearizable: bool,
    ) -> Result<V2AuthImage, ServerError> {
        self.read(linearizable, |c: &mut MemberTask| {
            v2_auth::image(&c.member.sm.kv.store)
        })
        .await
    }

    /// Answers once a linearizable read could be served (the read barrier `/health` uses).
    pub async fn read_barrier(&self) -> Result<(), ServerError> {
        self.read(true, |_: &mut MemberTask| ()).await
    }

    /// The header as of now.
    pub async fn header_now(&self) -> Result<Header, ServerError> {
        self.local(|c: &mut MemberTask| c.header()).await
    }

    /// Creates a watcher whose responses go to `sink` and hands it what is due at once.
    pub async fn watch(&self, req: WatchRequest, sink: WatchSink) -> Result<i64, ServerError> {
        self.local(move |c: &mut MemberTask| c.watch(req, sink))
            .await
    }

    /// Creates a watcher for `who` if it may read the watched range; the header either
    /// way. (Nothing is handed to the sink until [`MemberHandle::flush_watches`], so a
    /// stream can send its "created" answer first.)
    pub async fn watch_as(
        &self,
        req: WatchRequest,
        who: Option<AuthInfo>,
        sink: WatchSink,
    ) -> Result<(Result<i64, AuthError>, Header), ServerError> {
        self.local(move |c: &mut MemberTask| {
            let range = RangeRequest {
                key: req.key.clone(),
                range_end: req.range_end.clone(),
                ..Default::default()
            };
            if let Err(e) = c.member.sm.authorize_range(who.as_ref(), &range) {
                return (Err(e), c.header());
            }
            let id = c.member.watch_create(req);
            c.sinks.insert(id, sink);
            (Ok(id), c.header())
        })
        .await
    }

    /// Creates a watcher whose responses go to `sink`, unless history from `since` on
    /// (0: none) is compacted away; either way in one step of the member.
    pub async fn watch_since(
        &self,
        req: WatchRequest,
        since: i64,
        sink: WatchSink,
    ) -> Result<WatchStart, ServerError> {
        self.local(move |c: &mut MemberTask| {
            let kv = &c.member.sm.kv.store;
            let (revision, compacted) = (kv.revision(), kv.compacted_revision());
            if since != 0 && since <= compacted {
                return WatchStart::Compacted {
                    compacted,
                    revision,
                };
            }
            let id = c.member.watch_create(req);
            c.sinks.insert(id, sink);
            let m = &c.member;
            WatchStart::Created {
                id,
                revision,
                applied: m.sm.applied(),
                term: m.raft.term().0,
            }
        })
        .await
    }

    /// Cancels watchers; the header as of now.
    pub async fn cancel_watches(&self, ids: Vec<i64>) -> Result<Header, ServerError> {
        self.local(move |c: &mut MemberTask| {
            for id in ids {
                c.cancel_watch(id);
            }
            c.header()
        })
        .await
    }

    /// Hands what is due to every watch stream that keeps up.
    pub async fn flush_watches(&self) -> Result<(), ServerError> {
        self.local(|c: &mut MemberTask| c.flush_watches()).await
    }

    /// Progress notifications `of` asks for, handed to the watchers' sinks after what is
    /// due to them (the answer to a RequestProgress goes to `stream`).
    pub async fn watch_progress(&self, of: Progress, stream: WatchSink) -> Result<(), ServerError> {
        self.local(move |c: &mut MemberTask| {
            let of = match &of {
                Progress::Each(ids) => ProgressFor::Each(ids),
                Progress::Stream(ids) => ProgressFor::Stream(ids),
            };
            c.watch_progress(of, &stream)
        })
        .await
    }
}

/// Which watchers of a stream progress notifications are asked for (an owned
/// [`ProgressFor`], sent to the member task).
#[derive(Clone, Debug)]
pub enum Progress {
    /// The periodic notification, for these `progress_notify` watchers.
    Each(Vec<i64>),
    /// A RequestProgress over the stream's watchers.
    Stream(Vec<i64>),
}

impl MemberTask {
    /// This member's applied index and term.
    fn raft_position(&self) -> (u64, u64) {
        (self.member.sm.applied(), self.member.raft.term().0)
    }
}
