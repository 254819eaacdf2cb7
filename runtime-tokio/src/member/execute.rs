//! Executing a raft `Ready`: persist before acknowledging, send, apply committed entries
//! and answer their proposers, serve confirmed reads, feed watchers.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use keel_core::auth::{AuthCommand, AuthOutcome};
use keel_core::node::{Command, Outcome, Proposal};
use keel_core::raft::{ConfChange, EntryPayload, Ready, Role, Snapshot, SoftState, Time};

use super::driver::Core;
use super::ServerError;

/// An fsync slower than this is worth a log line (etcd warns at 1 s).
const SLOW_FSYNC: Duration = Duration::from_secs(1);

impl Core {
    pub(super) fn execute(&mut self, rd: Ready) -> Result<(), ServerError> {
        let now = self.clock.now();
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss);
        }
        for m in rd.messages {
            self.net.send(m);
        }
        if let Some(batch) = rd.persist {
            let t = Instant::now();
            self.storage
                .persist(&batch)
                .map_err(|e| ServerError::Storage(e.to_string()))?;
            if batch.must_sync {
                let took = t.elapsed();
                self.metrics.wal_fsync.observe(took);
                if took > SLOW_FSYNC {
                    tracing::warn!(took_ms = took.as_millis() as u64, "slow fdatasync");
                }
            }
            self.raft.persisted(self.clock.now(), batch.seq);
        }
        if let Some(snap) = rd.apply_snapshot {
            self.sm
                .install(&snap.data)
                .map_err(|e| ServerError::Storage(format!("snapshot from the leader: {e}")))?;
            self.hub.on_restore();
            self.refresh_peers();
            tracing::info!(
                index = snap.meta.index.0,
                "installed snapshot from the leader"
            );
        }
        if !rd.committed.is_empty() {
            self.apply(&rd.committed, now)?;
        }
        // Only the leader's lessor tracks expiry and renews, from when it has applied an
        // entry of its own term (see `StateMachine::track_leadership`).
        let leading = (self.raft.role() == Role::Leader).then(|| self.raft.term().0);
        self.sm.track_leadership(leading, now, self.cfg.election_ms);
        for rs in rd.read_states {
            if let Some(reads) = self.reads_by_ctx.remove(&rs.ctx.0) {
                self.reads_by_index
                    .extend(reads.into_iter().map(|f| (rs.index, f)));
            }
        }
        for ctx in rd.dropped_reads {
            for f in self.reads_by_ctx.remove(&ctx.0).unwrap_or_default() {
                f(Err(ServerError::LeaderChanged));
            }
        }
        if rd.want_snapshot {
            let data = self.sm.snapshot();
            self.raft.compact(now, data);
        }
        self.serve_reads();
        self.serve_index_waits();
        self.flush_watches();
        Ok(())
    }

    fn apply(&mut self, entries: &[keel_core::raft::Entry], now: Time) -> Result<(), ServerError> {
        let t = Instant::now();
        let mut members_changed = false;
        for e in entries {
            if let EntryPayload::ConfChange(cc) = &e.payload {
                members_changed = true;
                let (what, id) = match cc {
                    ConfChange::AddVoter(id)
                        if self.sm.members.get(&id.0).is_some_and(|m| m.learner) =>
                    {
                        ("promoted learner", id)
                    }
                    ConfChange::AddVoter(id) => ("added member", id),
                    ConfChange::AddLearner(id) => ("added learner", id),
                    ConfChange::Remove(id) => ("removed member", id),
                };
                tracing::info!(member = %format!("{:x}", id.0), index = e.index.0, "{what}");
                self.conf_change_applied(e.index, &e.payload);
            }
            let applied = self.sm.apply(e, now);
            self.metrics.proposals_applied.fetch_add(1, Relaxed);
            self.metrics.proposals_committed.fetch_add(1, Relaxed);
            let Some(a) = applied else { continue };
            members_changed |= matches!(a.outcome, Outcome::Member);
            self.note_auth(e, &a.outcome);
            if a.origin == self.id {
                if let Some(reply) = self.pending.remove(&a.seq) {
                    self.metrics.proposals_pending.fetch_sub(1, Relaxed);
                    let _ = reply.send(Ok((a.outcome, self.header())));
                }
            }
        }
        let events = self.sm.kv.kv.take_events();
        self.hub.on_events(&events);
        if members_changed {
            self.refresh_peers();
            self.publish();
        }
        self.metrics.apply.observe(t.elapsed());
        if self.storage.note_applied(entries) && !self.snapshot_writing {
            self.start_snapshot(now);
        }
        Ok(())
    }

    /// Takes a snapshot of the applied state and writes it on a blocking thread: the
    /// image is taken here (it must match the applied index), the file written and
    /// synced off the task, and the WAL behind it released once that is done.
    fn start_snapshot(&mut self, now: Time) {
        let data = self.sm.snapshot();
        let meta = self.raft.compact(now, data.clone());
        let writer = self.storage.snapshot_writer();
        let inbox = self.inbox.clone();
        self.snapshot_writing = true;
        tokio::task::spawn_blocking(move || {
            let snap = Snapshot { meta, data };
            let result = writer.write(&snap).map_err(|e| e.to_string());
            if let Some(tx) = inbox.upgrade() {
                let _ = tx.blocking_send(super::Input::SnapshotSaved {
                    term: snap.meta.term.0,
                    index: snap.meta.index.0,
                    result,
                });
            }
        });
    }

    pub(super) fn snapshot_saved(&mut self, term: u64, index: u64, result: Result<String, String>) {
        self.snapshot_writing = false;
        match result.and_then(|name| {
            self.storage
                .snapshot_saved(term, index, name)
                .map_err(|e| e.to_string())
        }) {
            Ok(()) => tracing::info!(index, "snapshot taken"),
            Err(e) => self.failure = Some(e),
        }
    }

    fn on_soft_state(&mut self, ss: SoftState) {
        let leader = ss.leader.0;
        let is_leader = ss.role == Role::Leader;
        self.metrics.term.store(ss.term.0, Relaxed);
        self.metrics
            .has_leader
            .store(u64::from(leader != 0), Relaxed);
        self.metrics.is_leader.store(u64::from(is_leader), Relaxed);
        if leader != self.last_leader {
            if leader != 0 {
                self.metrics.leader_changes.fetch_add(1, Relaxed);
            }
            if is_leader {
                tracing::info!(term = ss.term.0, "became leader");
            } else if leader != 0 {
                tracing::info!(leader = %format!("{leader:x}"), term = ss.term.0, "leader elected");
            } else {
                tracing::warn!(term = ss.term.0, "no leader");
            }
            self.last_leader = leader;
        }
        self.status.send_modify(|s| {
            s.leader = leader;
            s.term = ss.term.0;
            s.is_leader = is_leader;
        });
        if leader != 0 {
            self.publish();
        }
    }

    fn serve_reads(&mut self) {
        if self.reads_by_index.is_empty() {
            return;
        }
        let applied = self.sm.applied();
        let waiting = std::mem::take(&mut self.reads_by_index);
        let (ready, rest): (Vec<_>, Vec<_>) =
            waiting.into_iter().partition(|(i, _)| i.0 <= applied);
        self.reads_by_index = rest;
        for (_, f) in ready {
            f(Ok(self));
        }
    }

    /// Answers the callers waiting for an index this member has now applied, and drops
    /// those that gave up (a forged token can name an index far ahead: its waiter must
    /// not outlive the request).
    pub(super) fn serve_index_waits(&mut self) {
        if self.index_waits.is_empty() {
            return;
        }
        let applied = self.sm.applied();
        for (index, reply) in std::mem::take(&mut self.index_waits) {
            if index <= applied {
                let _ = reply.send(());
            } else if !reply.is_closed() {
                self.index_waits.push((index, reply));
            }
        }
    }

    /// Hands queued watch events to streams that keep up; the rest stay in the hub
    /// (falling back to history when they pile up).
    pub fn flush_watches(&mut self) {
        if self.sinks.is_empty() {
            return;
        }
        self.hub.catch_up(&self.sm.kv.kv);
        let rev = self.sm.kv.kv.revision();
        let sinks = &self.sinks;
        let out = self
            .hub
            .take_responses_if(rev, |id| sinks.get(&id).is_some_and(|s| s.ready()));
        for r in out {
            let id = r.watch_id;
            let canceled = r.canceled;
            let gone = match self.sinks.get(&id) {
                Some(s) => !s.send(r),
                None => true,
            };
            if canceled || gone {
                self.sinks.remove(&id);
                if gone {
                    self.hub.cancel(id);
                }
            }
        }
    }

    /// Keeps the token table in step with the auth store on every member (as etcd's
    /// simple token keeper): an Authenticate issues its token here, so the client may
    /// use it against any member; a deleted user's tokens, a user's tokens after a
    /// password change, and every token once auth is disabled go.
    fn note_auth(&mut self, entry: &keel_core::raft::Entry, outcome: &Outcome) {
        let Outcome::Auth(Ok(done)) = outcome else {
            return;
        };
        if let AuthOutcome::Authenticated {
            name,
            token,
            revision,
        } = done
        {
            // A JWT (empty here) is signed by the member that answers the client.
            if !token.is_empty() {
                if let Err(e) = self.tokens.assign(name, token, *revision) {
                    tracing::warn!(user = %name, error = %e, "could not issue an auth token");
                }
            }
        } else if let EntryPayload::Normal(data) = &entry.payload {
            // Auth changes are rare: reading the command again costs nothing that matters.
            if let Ok(Proposal {
                cmd:
                    Command::Auth(
                        AuthCommand::UserDelete { name }
                        | AuthCommand::UserChangePassword { name, .. },
                    ),
                ..
            }) = keel_core::node::decode_command(data)
            {
                self.tokens.invalidate_user(&name);
            }
        }
        if !self.sm.auth.enabled() {
            self.tokens.invalidate_all();
        }
    }

    /// Drops bookkeeping for leases that no longer exist.
    pub(super) fn forget_revoked(&mut self) {
        let lessor = &self.sm.kv.lessor;
        self.revoking.retain(|id| lessor.contains(*id));
    }
}
