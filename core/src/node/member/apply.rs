//! Executing the part of a raft `Ready` that follows its persist batch: install a
//! leader's snapshot, apply committed entries and answer their proposers, confirm reads
//! and serve those whose index is applied, take a snapshot when one is due.

use crate::auth::{AuthCommand, AuthOutcome};
use crate::node::{decode_command, Applied, Command, Outcome, Proposal};
use crate::raft::{ConfChange, Entry, EntryPayload, Ready, Role, Snapshot, Time};

use super::{voters, AppliedRecord, AuthNote, Member, MemberError, Note, Response};

impl Member {
    pub(super) fn finish_ready(&mut self, now: Time, rd: Ready) {
        if let Some(snap) = rd.apply_snapshot {
            if let Err(e) = self.sm.install(&snap.data) {
                let e = format!("snapshot from the leader: {e}");
                self.out.fatal = Some(MemberError::Storage(e));
                return;
            }
            self.hub.on_restore();
            self.applied_since_snapshot = 0;
            self.out.members_changed = true;
            let index = snap.meta.index;
            self.note_snapshot(index);
            self.out.notes.push(Note::SnapshotInstalled { index });
        }
        if !rd.committed.is_empty() {
            self.apply(&rd.committed, now);
            #[cfg(feature = "planted-bugs")]
            if self.planted(super::MemberBug::ReleaseWalAhead) {
                self.out.release_wal = Some(crate::raft::LogIndex(self.sm.applied()));
            }
        }
        // Only the leader's lessor tracks expiry and renews, from when it has applied an
        // entry of its own term (see `StateMachine::track_leadership`).
        let leading = (self.raft.role() == Role::Leader).then(|| self.raft.term().0);
        self.sm.track_leadership(leading, now, self.cfg.election_ms);
        for rs in rd.read_states {
            if let Some(reads) = self.reads_by_ctx.remove(&rs.ctx.0) {
                self.reads_by_index
                    .extend(reads.into_iter().map(|t| (rs.index, t)));
            }
        }
        for ctx in rd.dropped_reads {
            let Some(reads) = self.reads_by_ctx.remove(&ctx.0) else {
                continue;
            };
            // etcd counts each ReadIndex request a leader change failed, however many
            // reads waited on it.
            self.out.notes.push(Note::ReadIndexFailed);
            for t in reads {
                self.reply(t, Err(MemberError::LeaderChanged));
            }
        }
        if rd.want_snapshot {
            // A follower needs an image: raft keeps it (no file is written for it).
            let data = self.sm.snapshot();
            self.raft.compact(now, data);
        } else if self.applied_since_snapshot >= self.cfg.snapshot_count && !self.snapshot_writing {
            self.take_snapshot(now);
        }
        self.serve_reads();
        self.serve_index_waits(now);
    }

    fn apply(&mut self, entries: &[Entry], now: Time) {
        let record = self.cfg.record_applied;
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
                self.out.notes.push(Note::ConfChangeApplied {
                    what,
                    member: id.0,
                    index: e.index,
                });
                self.conf_change_applied(e.index, &e.payload);
            }
            if !matches!(e.payload, EntryPayload::Empty) {
                self.applied_since_snapshot += 1;
            }
            let corrupt_before = self.sm.corrupt();
            let applied = self.sm.apply(e, now);
            self.out.applied_count += 1;
            if record {
                let events = self.sm.kv.store.take_events();
                self.hub.on_events(&events);
                let conf = matches!(e.payload, EntryPayload::ConfChange(_));
                self.out.applied.push(AppliedRecord {
                    entry: e.clone(),
                    revoked: revoked_lease(e, &applied),
                    voters: conf.then(|| voters(&self.raft)),
                    events,
                });
            }
            let Some(a) = applied else { continue };
            if let Outcome::Alarm(raised) = &a.outcome {
                if !corrupt_before && self.sm.corrupt() {
                    if let Some((from, _)) = raised.first() {
                        self.out
                            .notes
                            .push(Note::CorruptAlarmRaised { from: *from });
                    }
                }
            }
            if a.origin == self.cfg.id
                && matches!(a.outcome, Outcome::LeaseRevoke(Ok(())))
                && self.revoking.values().any(|seq| *seq == a.seq)
            {
                // The revocation this member's lessor proposed for an expired lease took
                // effect (etcd counts it where it proposed it, once it succeeded).
                self.out.notes.push(Note::LeaseExpired);
            }
            members_changed |= matches!(a.outcome, Outcome::Member);
            self.note_auth(e, &a.outcome);
            if a.origin == self.cfg.id {
                if let Some((token, _)) = self.pending.remove(&a.seq) {
                    let header = self.header();
                    let outcome = a.outcome;
                    self.reply(token, Ok(Response::Applied { outcome, header }));
                }
            }
        }
        if !record {
            let events = self.sm.kv.store.take_events();
            self.hub.on_events(&events);
        }
        if members_changed {
            self.out.members_changed = true;
            self.publish(now);
        }
    }

    /// Takes a snapshot of the applied state: raft's log is compacted behind it at once
    /// (the image matches the applied index), and the driver writes the file.
    fn take_snapshot(&mut self, now: Time) {
        self.applied_since_snapshot = 0;
        let data = self.sm.snapshot();
        let meta = self.raft.compact(now, data.clone());
        self.snapshot_writing = true;
        self.out.snapshot = Some(Snapshot { meta, data });
    }

    fn serve_reads(&mut self) {
        if self.reads_by_index.is_empty() {
            return;
        }
        let applied = self.sm.applied();
        let waiting = std::mem::take(&mut self.reads_by_index);
        for (i, t) in waiting {
            if i.0 <= applied {
                self.reply(t, Ok(Response::Read));
            } else {
                self.reads_by_index.push((i, t));
            }
        }
    }

    /// Keeps the token keeper in step with the auth store on every member (as etcd's
    /// simple token keeper): an Authenticate issues its token here, so the client may
    /// use it against any member; a deleted user's tokens, a user's tokens after a
    /// password change, and every token once auth is disabled go.
    fn note_auth(&mut self, entry: &Entry, outcome: &Outcome) {
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
                self.out.auth.push(AuthNote::Issued {
                    name: name.clone(),
                    token: token.clone(),
                    revision: *revision,
                });
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
            }) = decode_command(data)
            {
                self.out.auth.push(AuthNote::UserInvalidated(name));
            }
        }
        if !self.sm.auth.enabled() {
            self.out.auth.push(AuthNote::AllInvalidated);
        }
    }
}

/// The lease whose revocation `applied` was, if it was one that took effect.
fn revoked_lease(e: &Entry, applied: &Option<Applied>) -> Option<i64> {
    let Some(Applied {
        outcome: Outcome::LeaseRevoke(Ok(())),
        ..
    }) = applied
    else {
        return None;
    };
    let EntryPayload::Normal(data) = &e.payload else {
        return None;
    };
    match decode_command(data).ok()?.cmd {
        Command::LeaseRevoke { id } => Some(id),
        _ => None,
    }
}
