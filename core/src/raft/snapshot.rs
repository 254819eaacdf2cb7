//! Snapshots for followers behind the log: the leader asks the application for an image,
//! streams it in acknowledged chunks, and the follower installs it once complete.

use bytes::{Bytes, BytesMut};

use super::message::MessageBody;
use super::node::RaftNode;
use super::progress::ReplState;
use super::types::{LogIndex, MemberId, Snapshot, SnapshotMeta};

/// A snapshot being received from a leader.
#[derive(Debug)]
pub(crate) struct IncomingSnapshot {
    from: MemberId,
    meta: SnapshotMeta,
    total: u64,
    buf: BytesMut,
}

impl RaftNode {
    /// Does any follower need entries the log no longer holds?
    pub(crate) fn any_follower_needs_snapshot(&self) -> bool {
        let first = self.log.first_index();
        self.progress
            .values()
            .any(|p| p.next < first || matches!(p.state, ReplState::Snapshot { .. }))
    }

    /// Starts sending a snapshot to `to`, or asks the application for one.
    pub(crate) fn start_snapshot(&mut self, to: MemberId) {
        let usable = self
            .snapshot
            .as_ref()
            .filter(|s| s.meta.index >= self.log.snapshot_index())
            .map(|s| s.meta.index);
        let Some(index) = usable else {
            self.want_snapshot = true;
            return;
        };
        let now = self.now;
        if let Some(pr) = self.progress.get_mut(&to) {
            pr.state = ReplState::Snapshot {
                index,
                sent: 0,
                acked: 0,
                last_ack: now,
            };
            pr.inflights.reset();
        }
        self.send_snapshot_chunks(to);
        self.send_empty_snapshot_if_needed(to);
    }

    /// An empty image has no bytes to stream but still needs one chunk saying "complete".
    fn send_empty_snapshot_if_needed(&mut self, to: MemberId) {
        let Some(snap) = self.snapshot.as_ref().filter(|s| s.data.is_empty()) else {
            return;
        };
        let msg = self.message(
            to,
            MessageBody::SnapshotChunk {
                meta: snap.meta.clone(),
                total: 0,
                offset: 0,
                data: Bytes::new(),
            },
        );
        self.send(msg);
    }

    /// Sends chunks while fewer than `snapshot_inflight_chunks` are unacknowledged.
    pub(crate) fn send_snapshot_chunks(&mut self, to: MemberId) {
        let Some(snap) = self.snapshot.clone() else {
            return;
        };
        let chunk = self.cfg.snapshot_chunk_bytes;
        let window = chunk.saturating_mul(self.cfg.snapshot_inflight_chunks);
        let total = snap.data.len() as u64;
        loop {
            let Some(pr) = self.progress.get_mut(&to) else {
                return;
            };
            let ReplState::Snapshot {
                index,
                ref mut sent,
                acked,
                ..
            } = pr.state
            else {
                return;
            };
            if index != snap.meta.index {
                // The image was replaced by a newer one mid-stream: start over with it.
                self.start_snapshot(to);
                return;
            }
            if *sent >= total || *sent - acked >= window {
                return;
            }
            let offset = *sent;
            let end = (offset + chunk).min(total);
            *sent = end;
            let data = snap.data.slice(offset as usize..end as usize);
            let msg = self.message(
                to,
                MessageBody::SnapshotChunk {
                    meta: snap.meta.clone(),
                    total,
                    offset,
                    data,
                },
            );
            self.send(msg);
        }
    }

    pub(crate) fn handle_snapshot_ack(
        &mut self,
        from: MemberId,
        index: LogIndex,
        received: u64,
        resend: bool,
    ) {
        let now = self.now;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if let ReplState::Snapshot {
            index: sending,
            ref mut sent,
            ref mut acked,
            ref mut last_ack,
        } = pr.state
        {
            if sending != index {
                return;
            }
            if received > *sent {
                return; // Claims bytes we never sent.
            }
            if resend {
                // The follower is missing what follows `received` (a lost chunk, or it
                // restarted and lost its partial buffer): resume from there. Only a gap
                // report rewinds, so ordinary acknowledgements never duplicate chunks.
                *sent = received;
                *acked = received;
                *last_ack = now;
            } else if received > *acked {
                *acked = received;
                *last_ack = now;
            }
        }
    }

    /// On a heartbeat answer from a follower whose snapshot stream went quiet, resend
    /// from the last acknowledged byte.
    pub(crate) fn resend_stalled_snapshot(&mut self, from: MemberId) {
        let now = self.now;
        let stall = self.cfg.election_timeout_ms;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        let ReplState::Snapshot {
            ref mut sent,
            acked,
            ref mut last_ack,
            ..
        } = pr.state
        else {
            return;
        };
        if now.since(*last_ack) < stall {
            return;
        }
        *sent = acked;
        *last_ack = now;
        self.send_empty_snapshot_if_needed(from);
    }

    /// Drops the image once no follower is being sent it.
    pub(crate) fn release_unneeded_snapshot(&mut self) {
        if self.snapshot.is_some() && !self.any_follower_needs_snapshot() {
            self.snapshot = None;
        }
    }

    /// Follower: one chunk arrived.
    pub(crate) fn handle_snapshot_chunk(
        &mut self,
        from: MemberId,
        meta: SnapshotMeta,
        total: u64,
        offset: u64,
        data: Bytes,
    ) {
        let end = offset.checked_add(data.len() as u64);
        if total > self.cfg.max_snapshot_bytes
            || end.is_none_or(|e| e > total)
            || meta.conf.voters.is_empty()
            || meta.index.0 > u64::MAX / 2
            || meta.term > self.term
        {
            return; // Malformed or oversized: drop.
        }
        if meta.index <= self.log.committed {
            // Already have everything it covers: tell the leader where we are.
            let reply = self.message(
                from,
                MessageBody::AppendResponse {
                    index: self.log.committed,
                    reject: None,
                },
            );
            self.send_durable(reply);
            return;
        }
        let fresh = match &self.incoming {
            Some(inc) => inc.from != from || inc.meta.index != meta.index,
            None => true,
        };
        if fresh {
            if offset != 0 {
                self.ack_chunk(from, meta.index, 0, true);
                return;
            }
            self.incoming = Some(IncomingSnapshot {
                from,
                meta: meta.clone(),
                total,
                // Grow with the data actually received, not with what the peer claims.
                buf: BytesMut::new(),
            });
        }
        let Some(inc) = self.incoming.as_mut() else {
            return;
        };
        if inc.total != total {
            self.incoming = None;
            return;
        }
        let have = inc.buf.len() as u64;
        if offset > have {
            self.ack_chunk(from, meta.index, have, true);
            return;
        }
        let skip = (have - offset) as usize;
        if skip < data.len() {
            inc.buf.extend_from_slice(&data[skip..]);
        }
        let have = inc.buf.len() as u64;
        if have < total {
            self.ack_chunk(from, meta.index, have, false);
            return;
        }
        let Some(inc) = self.incoming.take() else {
            return;
        };
        self.install_snapshot(
            from,
            Snapshot {
                meta: inc.meta,
                data: inc.buf.freeze(),
            },
        );
    }

    fn ack_chunk(&mut self, to: MemberId, index: LogIndex, received: u64, resend: bool) {
        let m = self.message(
            to,
            MessageBody::SnapshotAck {
                index,
                received,
                resend,
            },
        );
        self.send(m);
    }

    fn install_snapshot(&mut self, from: MemberId, snap: Snapshot) {
        let index = snap.meta.index;
        if self.log.match_term(index, snap.meta.term) {
            // Our log already holds the snapshot's last entry: just commit up to it.
            self.log.commit_to(index);
        } else {
            self.log.restore(index, snap.meta.term);
            self.clamp_inflight_batches(index);
            self.conf = snap.meta.conf.clone();
            self.snapshot_to_persist = Some(snap);
        }
        let reply = self.message(
            from,
            MessageBody::AppendResponse {
                index,
                reject: None,
            },
        );
        self.send_durable(reply);
    }
}
