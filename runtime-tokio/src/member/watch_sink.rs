//! The path from the member's watch hub to one watch stream.
//!
//! The hub hands a watcher's responses over only while its stream's backlog (responses
//! sent and not yet taken by the stream task) is below a limit; otherwise they stay in
//! the hub, which falls back to replaying history, so a slow client never holds memory
//! or writes. What is handed over is never dropped: the queue itself is unbounded, and
//! the backlog limit plus the hub's per-watcher queue bound it. (A bounded channel would
//! have to drop a response when one round overfills it — a gap in the stream.)

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use keel_core::mvcc::WatchResponse;
use tokio::sync::mpsc;

/// Responses a stream may have waiting before its watchers stop being handed more.
const MAX_BACKLOG: usize = 256;

/// The member's end: one clone per watcher of the stream.
#[derive(Clone, Debug)]
pub struct WatchSink {
    tx: mpsc::UnboundedSender<WatchResponse>,
    backlog: Arc<AtomicUsize>,
}

/// The stream task's end.
#[derive(Debug)]
pub struct WatchOutlet {
    rx: mpsc::UnboundedReceiver<WatchResponse>,
    backlog: Arc<AtomicUsize>,
}

/// A connected sink and outlet.
pub fn watch_channel() -> (WatchSink, WatchOutlet) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(AtomicUsize::new(0));
    (
        WatchSink {
            tx,
            backlog: backlog.clone(),
        },
        WatchOutlet { rx, backlog },
    )
}

impl WatchSink {
    /// Whether the stream keeps up well enough to be handed more responses.
    pub fn ready(&self) -> bool {
        self.backlog.load(Relaxed) < MAX_BACKLOG
    }

    /// Hands a response over; false once the stream is gone.
    pub fn send(&self, r: WatchResponse) -> bool {
        self.backlog.fetch_add(1, Relaxed);
        self.tx.send(r).is_ok()
    }
}

impl WatchOutlet {
    /// The next response, or None once every sink is gone.
    pub async fn recv(&mut self) -> Option<WatchResponse> {
        let r = self.rx.recv().await;
        if r.is_some() {
            self.backlog.fetch_sub(1, Relaxed);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backlog_gates_readiness_and_nothing_is_dropped() {
        let (sink, mut outlet) = watch_channel();
        let other = sink.clone();
        for i in 0..MAX_BACKLOG + 10 {
            assert_eq!(sink.ready(), i < MAX_BACKLOG);
            // Past the limit a response is still delivered, never lost.
            assert!(other.send(WatchResponse {
                watch_id: i as i64,
                ..Default::default()
            }));
        }
        for i in 0..MAX_BACKLOG + 10 {
            assert_eq!(outlet.recv().await.map(|r| r.watch_id), Some(i as i64));
        }
        assert!(sink.ready());
        drop(outlet);
        assert!(
            !sink.send(WatchResponse::default()),
            "a gone stream is reported"
        );
    }
}
