//! Watchers: ordered event streams over a key or range from any start revision.
//!
//! A watcher is *synced* while live events are appended to its queue as writes happen.
//! When its queue is full (a slow consumer), it becomes *unsynced*: live events are no
//! longer queued for it, and [`WatchHub::catch_up`] later refills it from the keyspace
//! history from the first revision it has not seen, so writes never block and memory
//! stays bounded, with no gap and no duplicate. A watcher whose next revision was
//! compacted away is canceled with the compact revision, as etcd does.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::store::{bounds, empty_range, KvStore};
use super::types::{Event, EventKind};

/// A watch request (etcd's `WatchCreateRequest`).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct WatchRequest {
    /// First key.
    pub key: Bytes,
    /// End of the range, as in a range request.
    pub range_end: Bytes,
    /// First revision to deliver (0: the next write).
    pub start_revision: i64,
    /// Drop put events.
    pub no_put: bool,
    /// Drop delete events.
    pub no_delete: bool,
    /// Include the previous key-value in events.
    pub prev_kv: bool,
    /// Split responses larger than the hub's fragment size.
    pub fragment: bool,
}

/// The watch ID of etcd's answer to a stream's RequestProgress (no watcher in
/// particular: clientv3's `InvalidWatchID`).
pub const STREAM_PROGRESS_ID: i64 = -1;

/// Which watchers progress notifications are asked for.
#[derive(Clone, Copy, Debug)]
pub enum ProgressFor<'a> {
    /// etcd's periodic notification (`progress_notify` watchers): one response per
    /// listed watcher that has nothing undelivered; the others get none this time.
    Each(&'a [i64]),
    /// etcd's RequestProgress for a stream's watchers: one response with watch ID
    /// [`STREAM_PROGRESS_ID`] if none of them has anything undelivered, else none (as
    /// etcd 3.5.13: the client asks again, and its events tell it the progress anyway).
    Stream(&'a [i64]),
}

/// A response for one watcher (etcd's `WatchResponse`, header revision included).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct WatchResponse {
    /// The watcher.
    pub watch_id: i64,
    /// Store revision when the response was made.
    pub header_revision: i64,
    /// Events, in revision order.
    pub events: Vec<Event>,
    /// More fragments of this response follow.
    pub fragment: bool,
    /// The watcher was canceled.
    pub canceled: bool,
    /// Set when canceled because its revision was compacted.
    pub compact_revision: i64,
}

#[derive(Debug)]
struct Watcher {
    req: WatchRequest,
    /// First revision not yet queued.
    next_rev: i64,
    synced: bool,
    queue: VecDeque<Event>,
    canceled_at: Option<i64>,
}

impl Watcher {
    fn matches(&self, e: &Event) -> bool {
        let k = &e.kv.key;
        let in_range = if self.req.range_end.is_empty() {
            *k == self.req.key
        } else if empty_range(&self.req.key, &self.req.range_end) {
            false
        } else {
            use std::ops::RangeBounds;
            RangeBounds::<[u8]>::contains(&bounds(&self.req.key, &self.req.range_end), k.as_ref())
        };
        in_range
            && !(self.req.no_put && e.kind == EventKind::Put)
            && !(self.req.no_delete && e.kind == EventKind::Delete)
    }

    fn push(&mut self, mut e: Event) {
        if !self.req.prev_kv {
            e.prev_kv = None;
        }
        self.queue.push_back(e);
    }
}

/// All watchers of one member.
#[derive(Debug)]
pub struct WatchHub {
    watchers: BTreeMap<i64, Watcher>,
    /// Queue length at which a watcher stops receiving live events.
    max_queue: usize,
    /// Bytes of events in one response before fragmenting.
    fragment_bytes: usize,
    next_id: i64,
}

impl WatchHub {
    /// A hub whose watchers queue at most `max_queue` events before falling back to
    /// history, and whose fragmented responses hold about `fragment_bytes` each.
    pub fn new(max_queue: usize, fragment_bytes: usize) -> WatchHub {
        WatchHub {
            watchers: BTreeMap::new(),
            max_queue: max_queue.max(1),
            fragment_bytes: fragment_bytes.max(1),
            next_id: 0,
        }
    }

    /// Creates a watcher; returns its ID. A start revision already compacted yields a
    /// watcher that is canceled (its first response says so, with the compact revision).
    pub fn create(&mut self, req: WatchRequest, store: &KvStore) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        let current = store.revision();
        let start = if req.start_revision <= 0 {
            current + 1
        } else {
            req.start_revision
        };
        // As etcd: only revisions below the compacted one are gone; compaction keeps
        // every event of the compacted revision itself (see `History::compact`).
        let compacted = store.compacted_revision();
        let canceled_at = (start < compacted).then_some(compacted);
        self.watchers.insert(
            id,
            Watcher {
                req,
                next_rev: start,
                synced: start > current,
                queue: VecDeque::new(),
                canceled_at,
            },
        );
        id
    }

    /// Removes a watcher; false if unknown.
    pub fn cancel(&mut self, id: i64) -> bool {
        self.watchers.remove(&id).is_some()
    }

    /// Delivers the events of one write (all from `KvStore::take_events`) to synced
    /// watchers; a watcher whose queue is full falls back to catching up from history.
    pub fn on_events(&mut self, events: &[Event]) {
        let Some(last) = events.last().map(|e| e.rev.main) else {
            return;
        };
        for w in self.watchers.values_mut() {
            if !w.synced || w.canceled_at.is_some() {
                continue;
            }
            if w.queue.len() >= self.max_queue {
                w.synced = false;
                continue;
            }
            let from = w.next_rev;
            for e in events.iter().filter(|e| e.rev.main >= from) {
                if w.matches(e) {
                    w.push(e.clone());
                }
            }
            w.next_rev = w.next_rev.max(last + 1);
        }
    }

    /// The store was replaced by a snapshot from the leader: the revisions it skipped
    /// produced no events, so every watcher catches up from history (or is canceled with
    /// the compact revision if that history is gone), as etcd's restore does.
    pub fn on_restore(&mut self) {
        for w in self.watchers.values_mut() {
            w.synced = false;
        }
    }

    /// Refills unsynced watchers from history (those with room in their queue).
    pub fn catch_up(&mut self, store: &KvStore) {
        let current = store.revision();
        let compacted = store.compacted_revision();
        for w in self.watchers.values_mut() {
            if w.synced || w.canceled_at.is_some() || w.queue.len() >= self.max_queue {
                continue;
            }
            if w.next_rev > current {
                // Waiting for a revision the store has not reached (a watch started in
                // the future, or resumed on a member behind the one it was on): history
                // holds nothing for it yet, and live events take it from `next_rev` on.
                // Catching up "to current" would move it back and repeat revisions.
                w.synced = true;
                continue;
            }
            if w.next_rev < compacted {
                w.canceled_at = Some(compacted);
                continue;
            }
            let room = self.max_queue - w.queue.len();
            let events: Vec<Event> = store
                .history(&w.req.key, &w.req.range_end, w.next_rev, current)
                .into_iter()
                .filter(|e| w.matches(e))
                .collect();
            // Queue whole revisions only, and at least one, so a revision with more
            // events than the queue holds still makes progress.
            let mut taken = 0;
            let mut upto = current;
            let mut i = 0;
            while i < events.len() {
                let rev = events[i].rev.main;
                let end = events[i..]
                    .iter()
                    .position(|e| e.rev.main != rev)
                    .map_or(events.len(), |n| i + n);
                if taken > 0 && taken + (end - i) > room {
                    upto = rev - 1;
                    break;
                }
                for e in &events[i..end] {
                    w.push(e.clone());
                }
                taken += end - i;
                i = end;
            }
            w.next_rev = upto + 1;
            w.synced = upto == current;
        }
    }

    /// Drains every watcher's queue into responses (fragmented where asked), including
    /// cancellations.
    pub fn take_responses(&mut self, header_revision: i64) -> Vec<WatchResponse> {
        self.take_responses_if(header_revision, |_| true)
    }

    /// Like [`WatchHub::take_responses`], for the watchers `ready` accepts only: a driver
    /// leaves the queue of a watcher whose client is not reading where it is, so that
    /// watcher falls behind into catch-up instead of buffering without bound.
    pub fn take_responses_if(
        &mut self,
        header_revision: i64,
        mut ready: impl FnMut(i64) -> bool,
    ) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, w) in self.watchers.iter_mut() {
            if !ready(*id) {
                continue;
            }
            if let Some(compact) = w.canceled_at {
                // Events queued before the cancellation are still delivered, first.
                if !w.queue.is_empty() {
                    out.push(WatchResponse {
                        watch_id: *id,
                        header_revision,
                        events: w.queue.drain(..).collect(),
                        ..WatchResponse::default()
                    });
                }
                out.push(WatchResponse {
                    watch_id: *id,
                    header_revision,
                    canceled: true,
                    compact_revision: compact,
                    ..WatchResponse::default()
                });
                gone.push(*id);
                continue;
            }
            if w.queue.is_empty() {
                continue;
            }
            let events: Vec<Event> = w.queue.drain(..).collect();
            if !w.req.fragment {
                out.push(WatchResponse {
                    watch_id: *id,
                    header_revision,
                    events,
                    ..WatchResponse::default()
                });
                continue;
            }
            let mut chunk = Vec::new();
            let mut size = 0;
            let n = events.len();
            for (i, e) in events.into_iter().enumerate() {
                size += e.kv.key.len() + e.kv.value.len();
                chunk.push(e);
                if size >= self.fragment_bytes || i + 1 == n {
                    out.push(WatchResponse {
                        watch_id: *id,
                        header_revision,
                        events: std::mem::take(&mut chunk),
                        fragment: i + 1 < n,
                        ..WatchResponse::default()
                    });
                    size = 0;
                }
            }
        }
        for id in gone {
            self.watchers.remove(&id);
        }
        out
    }

    /// Drains every watcher `ready` accepts, as [`WatchHub::take_responses_if`], then
    /// appends the progress notifications `of` asks for, at `header_revision`.
    ///
    /// A notification at revision R tells a client it has every event at or below R. It
    /// is made here only, after the drain, and only for watchers that are synced with an
    /// empty queue once it is done: every event of theirs at or below R is then earlier
    /// in this list or was handed out by an earlier call. A driver that hands each
    /// stream its responses in list order, down one FIFO path, can therefore never let a
    /// notification overtake an event it covers — the race etcd fixed in 3.4.31/3.5.13
    /// (a RequestProgress answered from the current revision while a watcher was still
    /// catching up, or while its events sat in the stream's send buffer).
    pub fn take_responses_with_progress(
        &mut self,
        header_revision: i64,
        ready: impl FnMut(i64) -> bool,
        of: ProgressFor<'_>,
    ) -> Vec<WatchResponse> {
        let mut out = self.take_responses_if(header_revision, ready);
        let note = |watch_id| WatchResponse {
            watch_id,
            header_revision,
            ..WatchResponse::default()
        };
        match of {
            ProgressFor::Each(ids) => out.extend(
                ids.iter()
                    .filter(|id| self.all_delivered(id))
                    .map(|id| note(*id)),
            ),
            // Watchers canceled meanwhile are gone (their cancellation is earlier in
            // the list): they hold nothing back.
            ProgressFor::Stream(ids) => {
                let unsynced = ids
                    .iter()
                    .any(|id| self.watchers.contains_key(id) && !self.all_delivered(id));
                if !unsynced {
                    out.push(note(STREAM_PROGRESS_ID));
                }
            }
        }
        out
    }

    /// Whether watcher `id` exists and has handed out every event up to the store's
    /// revision: synced, nothing queued, not waiting to report a cancellation.
    fn all_delivered(&self, id: &i64) -> bool {
        self.watchers
            .get(id)
            .is_some_and(|w| w.synced && w.queue.is_empty() && w.canceled_at.is_none())
    }

    /// Events queued across all watchers (memory accounting).
    pub fn queued(&self) -> usize {
        self.watchers.values().map(|w| w.queue.len()).sum()
    }
}
