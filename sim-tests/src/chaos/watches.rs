//! Watchers and what they must see. Each watcher client opens watches on random ranges
//! from random start revisions (the next write, revision 1, an old revision, the
//! latest) on random members, and resumes a watch on another member from the revision
//! after the last it is sure of when the stream goes silent (a crashed or paused
//! member) or, now and then, for no reason at all.
//!
//! [`check_watches`] compares every stream with the authoritative history (the changes
//! of every revision, as members applied them): each session of a watch delivers
//! exactly the changes in its range from its start revision to the last revision it
//! was told about (by an event or a progress notification), in order, with no gap, no
//! duplicate, and the right previous key-values; and the revisions of a watcher's
//! events only go forward, across resumes too.
//!
//! Watchers also ask for progress (etcd's RequestProgress) now and then, and
//! [`check_progress_order`] holds every session to what Kubernetes' watch cache relies
//! on: a progress notification at revision R comes after every event at or below R.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::mvcc::Event;
use keel_runtime_sim::api::{ClientOp, ClientReply, Request, CLIENT_TAG};
use keel_runtime_sim::cluster::member_addr;
use keel_runtime_sim::observer::Write;
use keel_runtime_sim::Observer;
use madsim::net::Endpoint;
use madsim::rand::{thread_rng, Rng};
use madsim::time::Instant;

use crate::lock;

/// A stream with nothing (not even a progress notification, sent every 500 ms) for this
/// long is given up and resumed elsewhere.
const SILENCE: Duration = Duration::from_millis(2000);

/// Milliseconds between a session's progress requests (the first goes right behind the
/// watch request, while the member may still be catching the watch up from history).
const PROGRESS_REQUESTS_MS: std::ops::Range<u64> = 50..700;

/// One watch stream on one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSession {
    /// The member (index) it was opened on.
    pub member: usize,
    /// The start revision asked for (0: the next write).
    pub requested: i64,
    /// The first revision it covers.
    pub start: u64,
    /// The events received, in the order received.
    pub events: Vec<Event>,
    /// Every change in range up to this revision was delivered (by the last event's
    /// revision or a progress notification's header); `start - 1` if nothing was.
    pub covered_to: u64,
    /// The compact revision, if the watch was canceled.
    pub canceled: Option<i64>,
    /// Opened with require-leader.
    pub require_leader: bool,
    /// When the member sent each response received (global ns).
    pub sent_ns: Vec<u64>,
    /// The status the member ended the stream with, if it did.
    pub ended: Option<String>,
    /// Progress notifications received, each as (events received before it, its
    /// revision).
    pub progress: Vec<(usize, u64)>,
}

/// A watcher's watch of one range: its first session and every resumption, each
/// starting right after the last revision the previous one covered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchChain {
    /// The watcher client.
    pub watcher: u64,
    /// First key.
    pub key: Bytes,
    /// End of the range (empty: the key only; `\0`: every key from `key`).
    pub range_end: Bytes,
    /// Whether events carry previous key-values.
    pub prev_kv: bool,
    /// The sessions, in order.
    pub sessions: Vec<WatchSession>,
}

impl WatchChain {
    fn contains(&self, key: &[u8]) -> bool {
        if self.range_end.is_empty() {
            key == self.key
        } else if self.range_end.as_ref() == [0] {
            key >= self.key.as_ref()
        } else {
            key >= self.key.as_ref() && key < self.range_end.as_ref()
        }
    }
}

/// What one watcher client does.
#[derive(Clone)]
pub(crate) struct WatchPlan {
    pub watcher: u64,
    pub members: usize,
    pub keys: u8,
    pub until: Instant,
    pub obs: Observer,
    pub log: Arc<Mutex<Vec<WatchChain>>>,
}

/// One watcher client's loop until `until`.
pub(crate) async fn watcher_loop(plan: WatchPlan) {
    let Ok(ep) = Endpoint::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        return;
    };
    // Tags 0 and 1 are the members' own.
    let mut tag = 2;
    while Instant::now() < plan.until {
        let (key, range_end, prev_kv, mut next_start, chain_end) = {
            let mut rng = thread_rng();
            let (key, range_end): (&[u8], &[u8]) = match rng.gen_range(0..4) {
                0 => (b"k", b"l"),
                1 => (b"l", b"m"),
                2 => (b"\0", b"\0"),
                _ => (b"", b""),
            };
            let (key, range_end) = if key.is_empty() {
                let k = format!("k{}", rng.gen_range(0..plan.keys));
                (Bytes::from(k), Bytes::new())
            } else {
                (
                    Bytes::copy_from_slice(key),
                    Bytes::copy_from_slice(range_end),
                )
            };
            let known = plan.obs.max_revision() as i64;
            let start = match rng.gen_range(0..4) {
                0 => 0,
                1 => 1,
                2 => rng.gen_range(1..=known),
                _ => known,
            };
            let end = Instant::now() + Duration::from_millis(rng.gen_range(3000..12_000));
            (
                key,
                range_end,
                rng.gen_bool(0.5),
                start,
                end.min(plan.until),
            )
        };
        let mut chain = WatchChain {
            watcher: plan.watcher,
            key,
            range_end,
            prev_kv,
            sessions: Vec::new(),
        };
        while Instant::now() < chain_end {
            tag += 1;
            let member = thread_rng().gen_range(0..plan.members);
            // Half the sessions require a leader (as etcdctl's and Kubernetes' watches
            // do), held long enough to outlast a member's loss of its leader.
            let require_leader = thread_rng().gen_bool(0.5);
            let hold = if require_leader {
                3000..10_000
            } else {
                1000..6000
            };
            let hold = Duration::from_millis(thread_rng().gen_range(hold));
            let deadline = (Instant::now() + hold).min(chain_end);
            let opts = SessionOpts {
                member,
                tag,
                start: next_start,
                deadline,
                require_leader,
            };
            let session = watch_session(&ep, &chain, opts).await;
            match session {
                Some(s) => {
                    next_start = s.covered_to as i64 + 1;
                    let canceled = s.canceled.is_some();
                    chain.sessions.push(s);
                    if canceled {
                        break;
                    }
                }
                None => madsim::time::sleep(Duration::from_millis(100)).await,
            }
        }
        if !chain.sessions.is_empty() {
            lock(&plan.log).push(chain);
        }
    }
}

/// One session's parameters.
struct SessionOpts {
    /// The member (index).
    member: usize,
    /// The watch request's ID.
    tag: u64,
    /// The start revision to ask for.
    start: i64,
    /// When to give the session up.
    deadline: Instant,
    require_leader: bool,
}

/// Opens a watch on `member` from `start` and follows it until `deadline`, until it is
/// canceled or ended or until it goes silent; None if it was never created.
async fn watch_session(ep: &Endpoint, chain: &WatchChain, o: SessionOpts) -> Option<WatchSession> {
    let SessionOpts {
        member,
        tag,
        start,
        deadline,
        require_leader,
    } = o;
    let to = member_addr(member);
    let op = ClientOp::Watch {
        key: chain.key.clone(),
        range_end: chain.range_end.clone(),
        start_revision: start,
        prev_kv: chain.prev_kv,
    };
    ep.send_to_raw(
        to,
        CLIENT_TAG,
        Box::new(Request {
            id: tag,
            op,
            require_leader,
            token: None,
        }),
    )
    .await
    .ok()?;
    let mut session: Option<WatchSession> = None;
    // Messages are numbered (the creation is 0): madsim's network reorders them.
    let mut waiting: BTreeMap<u64, ClientReply> = BTreeMap::new();
    let mut next = 0;
    let mut heard = Instant::now();
    let mut ask_progress = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline || now - heard >= SILENCE {
            break;
        }
        if now >= ask_progress {
            let gap = thread_rng().gen_range(PROGRESS_REQUESTS_MS);
            ask_progress = now + Duration::from_millis(gap);
            let ask = Request {
                id: 0,
                op: ClientOp::RequestProgress { id: tag },
                require_leader: false,
                token: None,
            };
            let _ = ep.send_to_raw(to, CLIENT_TAG, Box::new(ask)).await;
        }
        let wait = (heard + SILENCE - now)
            .min(deadline - now)
            .min(ask_progress - now);
        let Ok(Ok((payload, _))) = madsim::time::timeout(wait, ep.recv_from_raw(tag)).await else {
            continue;
        };
        heard = Instant::now();
        let Ok(reply) = payload.downcast::<ClientReply>() else {
            continue;
        };
        let seq = match *reply {
            ClientReply::WatchCreated { .. } => 0,
            ClientReply::Watch { seq, .. } | ClientReply::StreamEnded { seq, .. } => seq,
            // Refused at once (require-leader on a member without a leader).
            ClientReply::Refused(_) if session.is_none() => return None,
            _ => continue,
        };
        waiting.insert(seq, *reply);
        while let Some(reply) = waiting.remove(&next) {
            next += 1;
            match (reply, session.as_mut()) {
                (ClientReply::WatchCreated { revision }, None) => {
                    let first = if start <= 0 {
                        revision + 1
                    } else {
                        start as u64
                    };
                    session = Some(WatchSession {
                        member,
                        requested: start,
                        start: first,
                        events: Vec::new(),
                        covered_to: first - 1,
                        canceled: None,
                        require_leader,
                        sent_ns: Vec::new(),
                        ended: None,
                        progress: Vec::new(),
                    });
                }
                (ClientReply::StreamEnded { reason, .. }, Some(s)) => {
                    s.ended = Some(reason);
                    return session;
                }
                (ClientReply::Watch { resp, sent_ns, .. }, Some(s)) => {
                    s.sent_ns.push(sent_ns);
                    if resp.canceled {
                        s.canceled = Some(resp.compact_revision);
                        return session;
                    }
                    let upto = match resp.events.last() {
                        Some(e) => e.rev.main,
                        None => {
                            let rev = resp.header_revision.max(0) as u64;
                            s.progress.push((s.events.len(), rev));
                            resp.header_revision
                        }
                    };
                    s.covered_to = s.covered_to.max(upto.max(0) as u64);
                    s.events.extend(resp.events);
                }
                _ => {}
            }
        }
    }
    let cancel = ClientOp::CancelWatch { id: tag };
    let _ = ep
        .send_to_raw(
            to,
            CLIENT_TAG,
            Box::new(Request {
                id: 0,
                op: cancel,
                require_leader: false,
                token: None,
            }),
        )
        .await;
    session
}

/// Checks that streams opened with require-leader end once their member has long had no
/// leader: no response may be sent on one after its member has gone `bound_ns` without a
/// leader (`timelines`: per member ID, when it learned or lost one; `member_id`: the ID
/// of the member at an index). And a stream ends only with "etcdserver: no leader".
pub fn check_leaderless_streams(
    chains: &[WatchChain],
    timelines: &BTreeMap<u64, Vec<(u64, bool)>>,
    member_id: impl Fn(usize) -> u64,
    bound_ns: u64,
) -> Result<(), String> {
    for c in chains {
        for s in c.sessions.iter().filter(|s| s.require_leader) {
            if let Some(reason) = s.ended.as_ref().filter(|r| *r != "etcdserver: no leader") {
                return Err(format!(
                    "watcher {}: a require-leader stream on member {} ended with {reason:?}",
                    c.watcher, s.member
                ));
            }
            let id = member_id(s.member);
            let Some(timeline) = timelines.get(&id) else {
                continue;
            };
            for &sent in &s.sent_ns {
                // The member's last change of mind before it sent this.
                let last = timeline.iter().rev().find(|(at, _)| *at <= sent);
                if let Some(&(lost, false)) = last {
                    if sent - lost > bound_ns {
                        return Err(format!(
                            "watcher {}: member {id:x} sent a response on a require-leader \
                             watch stream {} ms after it lost its leader; such streams must \
                             end within {} ms",
                            c.watcher,
                            (sent - lost) / 1_000_000,
                            bound_ns / 1_000_000
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks that no session received an event at or below the revision of a progress
/// notification it had received before (a watch cache told "you have everything up to
/// R" would serve reads at R without that event).
pub fn check_progress_order(chains: &[WatchChain]) -> Result<(), String> {
    for c in chains {
        for (i, s) in c.sessions.iter().enumerate() {
            for &(before, rev) in &s.progress {
                if let Some(e) = s.events[before..]
                    .iter()
                    .find(|e| e.rev.main.max(0) as u64 <= rev)
                {
                    return Err(format!(
                        "watcher {} session {i} on member {}: a progress notification at \
                         revision {rev} came before the event {}",
                        c.watcher,
                        s.member,
                        describe(e)
                    ));
                }
            }
        }
    }
    Ok(())
}

fn describe(e: &Event) -> String {
    format!(
        "{:?} {} at {}.{} (value {:?}, prev {:?})",
        e.kind,
        String::from_utf8_lossy(&e.kv.key),
        e.rev.main,
        e.rev.sub,
        String::from_utf8_lossy(&e.kv.value),
        e.prev_kv.as_ref().map(|p| (
            String::from_utf8_lossy(&p.value).into_owned(),
            p.mod_revision
        ))
    )
}

/// Checks every watch chain against the authoritative history (`writes`: the changes of
/// every revision, by revision). The first problem found, described.
///
/// An event's previous key-value is read at its revision minus one when it is sent, as
/// etcd does: below the compaction it is left out. So an event whose revision minus one
/// is below `compacted_at_most` (the highest revision a compaction was asked for) may
/// come without it; any other must carry it.
pub fn check_watches(
    writes: &BTreeMap<u64, Write>,
    chains: &[WatchChain],
    compacted_at_most: i64,
) -> Result<(), String> {
    for c in chains {
        let name = format!(
            "watcher {} on {:?}..{:?} (prev_kv {})",
            c.watcher,
            String::from_utf8_lossy(&c.key),
            String::from_utf8_lossy(&c.range_end),
            c.prev_kv
        );
        // Revisions only go forward, across resumes too.
        let mut last: Option<(i64, i64)> = None;
        for s in &c.sessions {
            for e in &s.events {
                let at = (e.rev.main, e.rev.sub);
                if let Some(l) = last.filter(|l| at <= *l) {
                    return Err(format!(
                        "watch revisions went backwards: {name} got {} after revision {}.{}",
                        describe(e),
                        l.0,
                        l.1
                    ));
                }
                last = Some(at);
            }
        }
        for (i, s) in c.sessions.iter().enumerate() {
            let what = format!(
                "{name}, session {i} on member {} from revision {} (asked {}), covering to {}",
                s.member, s.start, s.requested, s.covered_to
            );
            if let Some(prev) = i.checked_sub(1).map(|p| &c.sessions[p]) {
                if s.start != prev.covered_to + 1 {
                    return Err(format!(
                        "{what}: resumed at {} after the previous session covered to {}",
                        s.start, prev.covered_to
                    ));
                }
            }
            if let Some(compact) = s.canceled {
                // Compaction at C removes revisions below C: a watch from C is served.
                if compact <= s.start as i64 {
                    return Err(format!(
                        "{what}: canceled with compact revision {compact}, not above its start"
                    ));
                }
            }
            let mut expected = Vec::new();
            for rev in s.start.max(2)..=s.covered_to {
                let Some(w) = writes.get(&rev) else {
                    return Err(format!(
                        "{what}: revision {rev} is missing from the applied history"
                    ));
                };
                for e in w.events.iter().filter(|e| c.contains(&e.kv.key)) {
                    let mut e = e.clone();
                    if !c.prev_kv {
                        e.prev_kv = None;
                    }
                    expected.push(e);
                }
            }
            for (want, got) in expected.iter_mut().zip(&s.events) {
                let same_event = got.rev == want.rev && got.kv.key == want.kv.key;
                if same_event && got.prev_kv.is_none() && want.rev.main - 1 < compacted_at_most {
                    want.prev_kv = None;
                }
            }
            compare(&what, &expected, &s.events)?;
        }
    }
    Ok(())
}

fn compare(what: &str, expected: &[Event], got: &[Event]) -> Result<(), String> {
    for (i, want) in expected.iter().enumerate() {
        let Some(g) = got.get(i) else {
            return Err(format!(
                "{what}: gap: never got {} ({} of {} events received)",
                describe(want),
                got.len(),
                expected.len()
            ));
        };
        if g == want {
            continue;
        }
        let problem = if g.rev == want.rev && g.kv.key == want.kv.key && g.kind == want.kind {
            "wrong event contents (value or prev_kv)"
        } else if g.rev > want.rev {
            "gap"
        } else if i > 0 && g.rev == got[i - 1].rev {
            "duplicate"
        } else {
            "unexpected event"
        };
        return Err(format!(
            "{what}: {problem}: event {i} is {}, expected {}",
            describe(g),
            describe(want)
        ));
    }
    if let Some(extra) = got.get(expected.len()) {
        return Err(format!(
            "{what}: unexpected event {} beyond the {} expected",
            describe(extra),
            expected.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::mvcc::{EventKind, KeyValue, Revision};

    fn kv(key: &'static str, value: &'static str, rev: i64) -> KeyValue {
        KeyValue {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            lease: 0,
        }
    }

    fn put(key: &'static str, value: &'static str, rev: i64, prev: Option<KeyValue>) -> Event {
        Event {
            kind: EventKind::Put,
            rev: Revision { main: rev, sub: 0 },
            kv: kv(key, value, rev),
            prev_kv: prev,
        }
    }

    /// Revisions 2..=5: k0=a, k1=b, k0=c (prev a), k1=d (prev b).
    fn history() -> BTreeMap<u64, Write> {
        let evs = [
            put("k0", "a", 2, None),
            put("k1", "b", 3, None),
            put("k0", "c", 4, Some(kv("k0", "a", 2))),
            put("k1", "d", 5, Some(kv("k1", "b", 3))),
        ];
        evs.into_iter()
            .map(|e| {
                (
                    e.rev.main as u64,
                    Write {
                        events: vec![e],
                        revoked_lease: None,
                        at_ns: 0,
                        member: 1,
                    },
                )
            })
            .collect()
    }

    fn session(start: u64, covered_to: u64, events: Vec<Event>) -> WatchSession {
        WatchSession {
            member: 0,
            requested: start as i64,
            start,
            events,
            covered_to,
            canceled: None,
            require_leader: false,
            sent_ns: Vec::new(),
            ended: None,
            progress: Vec::new(),
        }
    }

    /// A require-leader session on member index 0 (ID 1) with responses sent at these
    /// milliseconds.
    fn leader_session(sent_ms: &[u64], ended: Option<&str>) -> WatchChain {
        let mut s = session(1, 1, Vec::new());
        s.require_leader = true;
        s.sent_ns = sent_ms.iter().map(|ms| ms * 1_000_000).collect();
        s.ended = ended.map(str::to_string);
        chain(vec![s])
    }

    /// Member 1 knew a leader until 1 s, then none.
    fn lost_at_1s() -> BTreeMap<u64, Vec<(u64, bool)>> {
        BTreeMap::from([(
            1,
            vec![(0, false), (10_000_000, true), (1_000_000_000, false)],
        )])
    }

    #[test]
    fn a_require_leader_stream_served_past_the_bound_is_caught() {
        let check = |c: WatchChain| {
            check_leaderless_streams(&[c], &lost_at_1s(), |i| i as u64 + 1, 3_050_000_000)
        };
        let ended = Some("etcdserver: no leader");
        assert_eq!(check(leader_session(&[500, 1_500, 3_900], ended)), Ok(()));
        let e = check(leader_session(&[500, 4_100], None)).unwrap_err();
        assert!(e.contains("3100 ms after it lost its leader"), "{e}");
        let mut plain = leader_session(&[4_100], None);
        plain.sessions[0].require_leader = false;
        assert_eq!(check(plain), Ok(()), "only require-leader streams end");
        let e = check(leader_session(
            &[500],
            Some("etcdserver: request timed out"),
        ));
        assert!(e.unwrap_err().contains("ended with"));
    }

    fn chain(sessions: Vec<WatchSession>) -> WatchChain {
        WatchChain {
            watcher: 1,
            key: Bytes::from_static(b"k0"),
            range_end: Bytes::new(),
            prev_kv: true,
            sessions,
        }
    }

    fn good() -> WatchChain {
        chain(vec![
            session(1, 3, vec![put("k0", "a", 2, None)]),
            session(4, 5, vec![put("k0", "c", 4, Some(kv("k0", "a", 2)))]),
        ])
    }

    #[test]
    fn the_exact_history_across_a_resume_passes() {
        assert_eq!(check_watches(&history(), &[good()], 0), Ok(()));
        let mut all = good();
        all.key = Bytes::from_static(b"\0");
        all.range_end = Bytes::from_static(b"\0");
        all.prev_kv = false;
        all.sessions = vec![session(
            3,
            5,
            history()
                .range(3..)
                .map(|(_, w)| Event {
                    prev_kv: None,
                    ..w.events[0].clone()
                })
                .collect(),
        )];
        assert_eq!(check_watches(&history(), &[all], 0), Ok(()));
    }

    #[test]
    fn a_gap_is_caught() {
        let mut c = good();
        c.sessions[1].events.clear();
        let e = check_watches(&history(), &[c], 0).unwrap_err();
        assert!(e.contains("gap"), "{e}");
    }

    #[test]
    fn a_duplicate_is_caught() {
        let mut c = good();
        c.sessions[1].events.insert(0, put("k0", "a", 2, None));
        let e = check_watches(&history(), &[c], 0).unwrap_err();
        assert!(e.contains("backwards"), "{e}");
        let mut c = good();
        let dup = c.sessions[1].events[0].clone();
        c.sessions[1].events.push(dup);
        let e = check_watches(&history(), &[c], 0).unwrap_err();
        assert!(e.contains("backwards"), "{e}");
    }

    #[test]
    fn a_wrong_prev_kv_is_caught() {
        let mut c = good();
        c.sessions[1].events[0].prev_kv = Some(kv("k0", "x", 2));
        let e = check_watches(&history(), &[c], 0).unwrap_err();
        assert!(e.contains("prev_kv"), "{e}");
        let mut c = good();
        c.sessions[1].events[0].prev_kv = None;
        assert!(check_watches(&history(), &[c], 0).is_err());
    }

    #[test]
    fn a_resume_that_skips_revisions_is_caught() {
        let mut c = good();
        c.sessions[1].start = 5;
        c.sessions[1].events.clear();
        let e = check_watches(&history(), &[c], 0).unwrap_err();
        assert!(e.contains("resumed at 5"), "{e}");
    }

    #[test]
    fn an_event_out_of_range_or_after_coverage_is_caught() {
        let mut c = good();
        c.sessions[0].events.push(put("k1", "b", 3, None));
        assert!(check_watches(&history(), &[c], 0).is_err());
        let mut c = good();
        c.sessions[0].covered_to = 4;
        c.sessions[1].start = 5;
        assert!(check_watches(&history(), &[c], 0).is_err());
    }

    #[test]
    fn a_progress_notification_ahead_of_an_event_it_covers_is_caught() {
        let mut c = good();
        // Told "up to 3" after the event at 2: in order.
        c.sessions[0].progress = vec![(1, 3)];
        c.sessions[1].progress = vec![(0, 3), (1, 4)];
        assert_eq!(check_progress_order(&[c.clone()]), Ok(()));
        // Told "up to 4" before the event at 4 arrived.
        c.sessions[1].progress = vec![(0, 4)];
        let e = check_progress_order(&[c]).unwrap_err();
        assert!(
            e.contains("progress notification at revision 4 came before"),
            "{e}"
        );
    }

    #[test]
    fn an_unexplained_cancellation_is_caught() {
        let mut c = good();
        c.sessions[1].canceled = Some(0);
        let e = check_watches(&history(), &[c], 0).unwrap_err();
        assert!(e.contains("canceled"), "{e}");
    }
}
