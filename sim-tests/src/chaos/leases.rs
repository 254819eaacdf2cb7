//! Leases and their one promise: a lease's keys are not deleted by its expiry before its
//! TTL has passed since the client last renewed it. Each lease client grants leases
//! with random TTLs, attaches keys to them, keeps them alive at random intervals (now
//! and then late, close to or past the TTL) through whichever member is the leader, and
//! at a random moment abandons each, so it expires.
//!
//! [`check_leases`] compares every revocation in the applied history with what clients
//! saw: the revocation must be applied no earlier than TTL seconds of global simulated
//! time after the send time of the grant or keepalive that succeeded last (send time:
//! the conservative end, the member renewed at or after it). The workload never
//! revokes a lease itself, so every revocation is an expiry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::mvcc::LeaseError;
use keel_runtime_sim::api::{ClientOp, ClientReply};
use keel_runtime_sim::observer::Write;
use madsim::rand::{thread_rng, Rng};
use madsim::time::Instant;

use super::workload::Caller;
use crate::lock;

/// What a client knows of one lease it was granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLog {
    /// Lease ID.
    pub id: i64,
    /// The client.
    pub client: u64,
    /// Granted TTL in seconds.
    pub ttl_s: i64,
    /// Send times (ns since the start) of the grant and of every keepalive that
    /// succeeded, in order.
    pub renewed_ns: Vec<u64>,
}

/// Every lease clients were granted, by ID.
pub(crate) type SharedLeases = Arc<Mutex<BTreeMap<i64, LeaseLog>>>;

/// What one lease client does.
#[derive(Clone)]
pub(crate) struct LeasePlan {
    pub client: u64,
    pub members: usize,
    pub until: Instant,
    pub epoch: Instant,
    pub log: SharedLeases,
}

struct Active {
    id: i64,
    ttl_ms: u64,
    next_keepalive: Instant,
    abandon_at: Instant,
}

fn ns_since(epoch: Instant) -> u64 {
    Instant::now().duration_since(epoch).as_nanos() as u64
}

fn keepalive_gap(ttl_ms: u64) -> Duration {
    let mut rng = thread_rng();
    // Mostly well inside the TTL; sometimes late, near or past it.
    let permille = if rng.gen_bool(0.1) {
        rng.gen_range(850..1150)
    } else {
        rng.gen_range(200..600)
    };
    Duration::from_millis(ttl_ms * permille / 1000)
}

/// One lease client's loop until `until`.
pub(crate) async fn lease_loop(plan: LeasePlan) {
    let Some(mut caller) = Caller::bind().await else {
        return;
    };
    let mut active: Vec<Active> = Vec::new();
    let mut leader_hint = 0;
    let mut granted = 0u64;
    let mut next_grant = Instant::now();
    while Instant::now() < plan.until {
        let now = Instant::now();
        if active.len() < 3 && now >= next_grant {
            granted += 1;
            let (ttl, member) = {
                let mut rng = thread_rng();
                (rng.gen_range(1..=4), rng.gen_range(0..plan.members))
            };
            let sent = ns_since(plan.epoch);
            if let Some(ClientReply::LeaseGrant { id, ttl, .. }) =
                caller.call(member, ClientOp::LeaseGrant { ttl }).await
            {
                lock(&plan.log).insert(
                    id,
                    LeaseLog {
                        id,
                        client: plan.client,
                        ttl_s: ttl,
                        renewed_ns: vec![sent],
                    },
                );
                let keys = thread_rng().gen_range(1..=2);
                for j in 0..keys {
                    let op = ClientOp::Put {
                        key: Bytes::from(format!("l{}.{granted}.{j}", plan.client)),
                        value: Bytes::from(format!("{id:x}")),
                        lease: id,
                    };
                    let member = thread_rng().gen_range(0..plan.members);
                    caller.call(member, op).await;
                }
                let ttl_ms = ttl.max(1) as u64 * 1000;
                let life = Duration::from_millis(thread_rng().gen_range(1000..15_000));
                active.push(Active {
                    id,
                    ttl_ms,
                    next_keepalive: Instant::now() + keepalive_gap(ttl_ms),
                    abandon_at: Instant::now() + life,
                });
            }
            next_grant = Instant::now() + Duration::from_millis(thread_rng().gen_range(0..2000));
            continue;
        }
        let due = active
            .iter()
            .enumerate()
            .min_by_key(|(_, a)| a.next_keepalive)
            .map(|(i, a)| (i, a.next_keepalive));
        match due {
            Some((i, at)) if at <= now => {
                if now >= active[i].abandon_at {
                    // Left to expire.
                    active.swap_remove(i);
                    continue;
                }
                let id = active[i].id;
                let mut gone = false;
                let mut waits = 0;
                let mut attempt = 0;
                while attempt < plan.members {
                    let member = (leader_hint + attempt) % plan.members;
                    let sent = ns_since(plan.epoch);
                    match caller.call(member, ClientOp::LeaseKeepAlive { id }).await {
                        // The leader clears the lease's checkpoint through raft first
                        // (as etcd's Renew waits for it): ask it again shortly.
                        Some(ClientReply::Refused(r))
                            if r == LeaseError::CheckpointPending.to_string() && waits < 20 =>
                        {
                            waits += 1;
                            madsim::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Some(ClientReply::LeaseKeepAlive { ttl }) if ttl > 0 => {
                            leader_hint = member;
                            if let Some(l) = lock(&plan.log).get_mut(&id) {
                                l.renewed_ns.push(sent);
                            }
                            break;
                        }
                        Some(ClientReply::LeaseKeepAlive { .. }) => {
                            gone = true;
                            break;
                        }
                        _ => {}
                    }
                    attempt += 1;
                }
                if gone {
                    active.swap_remove(i);
                } else {
                    let a = &mut active[i];
                    a.next_keepalive = Instant::now() + keepalive_gap(a.ttl_ms);
                }
            }
            _ => {
                let mut wake = next_grant.min(plan.until);
                if let Some((_, at)) = due {
                    wake = wake.min(at);
                }
                let nap = wake
                    .saturating_duration_since(now)
                    .clamp(Duration::from_millis(5), Duration::from_millis(200));
                madsim::time::sleep(nap).await;
            }
        }
    }
}

/// Checks that no lease was revoked before its TTL passed since the client last renewed
/// it: every revocation in `writes` (the applied history) against the grant and
/// keepalive send times in `leases`. `allowance_ppm` is how much faster than global
/// time the leader's clock may run: the leader measures the TTL with its own clock (as
/// etcd's does, with no margin), so a clock `d` fast legitimately ends a lease after
/// `TTL / (1 + d)`; the check then asks for `TTL * (1 - d)`.
pub fn check_leases(
    writes: &BTreeMap<u64, Write>,
    leases: &BTreeMap<i64, LeaseLog>,
    allowance_ppm: u64,
) -> Result<(), String> {
    for (rev, w) in writes {
        let Some(id) = w.revoked_lease else { continue };
        let Some(l) = leases.get(&id) else { continue };
        let ttl_ns = l.ttl_s.max(0) as u64 * 1_000_000_000;
        let min_life = ttl_ns - ttl_ns / 1_000_000 * allowance_ppm.min(1_000_000);
        let Some(&last) = l.renewed_ns.iter().max() else {
            continue;
        };
        if w.at_ns < last + min_life {
            let keys: Vec<String> = w
                .events
                .iter()
                .map(|e| String::from_utf8_lossy(&e.kv.key).into_owned())
                .collect();
            let when = if w.at_ns < last {
                "before".to_string()
            } else {
                format!("{} ms after", (w.at_ns - last) / 1_000_000)
            };
            return Err(format!(
                "lease expired early: lease {id:x} of client {} (TTL {} s) was revoked at \
                 revision {rev} (keys {keys:?} deleted, first applied by member {:x} at \
                 {:.3} s), {when} the client sent the keepalive or grant that succeeded at \
                 {:.3} s (renewals sent at {:?} ms)",
                l.client,
                l.ttl_s,
                w.member,
                w.at_ns as f64 / 1e9,
                last as f64 / 1e9,
                l.renewed_ns
                    .iter()
                    .map(|n| n / 1_000_000)
                    .collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::mvcc::{Event, EventKind, KeyValue, Revision};

    fn revoke(at_ms: u64) -> BTreeMap<u64, Write> {
        let del = Event {
            kind: EventKind::Delete,
            rev: Revision { main: 9, sub: 0 },
            kv: KeyValue {
                key: Bytes::from_static(b"l1.1.0"),
                mod_revision: 9,
                ..KeyValue::default()
            },
            prev_kv: None,
        };
        BTreeMap::from([(
            9,
            Write {
                events: vec![del],
                revoked_lease: Some(7),
                at_ns: at_ms * 1_000_000,
                member: 1,
            },
        )])
    }

    fn lease(renewed_ms: &[u64]) -> BTreeMap<i64, LeaseLog> {
        BTreeMap::from([(
            7,
            LeaseLog {
                id: 7,
                client: 1,
                ttl_s: 2,
                renewed_ns: renewed_ms.iter().map(|m| m * 1_000_000).collect(),
            },
        )])
    }

    #[test]
    fn expiry_after_the_ttl_passes() {
        assert_eq!(check_leases(&revoke(3_000), &lease(&[0, 1_000]), 0), Ok(()));
        assert_eq!(check_leases(&revoke(9_000), &lease(&[0, 1_000]), 0), Ok(()));
    }

    #[test]
    fn an_early_expiry_is_caught() {
        let e = check_leases(&revoke(2_999), &lease(&[0, 1_000]), 0).unwrap_err();
        assert!(e.contains("expired early"), "{e}");
        // A keepalive that succeeded after the revocation was applied counts too.
        assert!(check_leases(&revoke(5_000), &lease(&[0, 6_000]), 0).is_err());
    }

    #[test]
    fn the_allowance_is_for_a_fast_clock_only() {
        // 2 s at 4% fast: 80 ms early is allowed, 81 ms is not.
        assert_eq!(check_leases(&revoke(1_920), &lease(&[0]), 40_000), Ok(()));
        assert!(check_leases(&revoke(1_919), &lease(&[0]), 40_000).is_err());
    }
}
