//! Lease clients and the one promise of a lease: its keys are not deleted by its
//! expiry before its TTL has passed since the client last renewed it.
//!
//! Each lease client grants leases (TTL 1-3 s; 1 s is the minimum at a 500 ms election timeout), attaches keys under `l/<lease>/` to
//! them, keeps them alive through random members, and at a random moment abandons each
//! so it expires. The simulator's check knows when each revocation was applied; a real
//! cluster does not say, so this one bounds it from above: a revocation at revision R
//! was applied no later than the first successful response (of any client, any
//! member) whose header revision is R or more, and a keepalive answered "not found"
//! shows the lease gone by the time the answer arrived. Either bound falling before
//! `last successful renewal sent + TTL` is an early expiry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use keel_core::mvcc::EventKind;
use keel_runtime_sim::observer::Write;
use keel_runtime_tokio::pb::etcdserverpb::{LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest};
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

use crate::client::{Clients, REQUEST_TIMEOUT};
use crate::clock::Clock;

/// What a client knows of one lease.
#[derive(Clone, Debug, Default)]
pub struct LeaseLog {
    /// Granted TTL in seconds.
    pub ttl_s: i64,
    /// Send times (run ns) of the grant and of every keepalive that succeeded.
    pub renewed_ns: Vec<u64>,
    /// Arrival times of keepalive answers that said the lease was gone.
    pub gone_ns: Vec<u64>,
}

/// Every lease granted, by ID.
pub type SharedLeases = Arc<Mutex<BTreeMap<i64, LeaseLog>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key prefix of lease `id`'s keys.
fn lease_prefix(id: i64) -> String {
    format!("l/{id:x}/")
}

struct Active {
    id: i64,
    ttl_ms: u64,
    next_keepalive: Instant,
    abandon_at: Instant,
}

/// One lease client.
pub struct LeaseClient {
    /// Its choices.
    pub rng: ChaCha8Rng,
    /// Connections.
    pub clients: Clients,
    /// Time base.
    pub clock: Clock,
    /// Where its leases go.
    pub log: SharedLeases,
    /// Every (completion time, header revision) of a successful response.
    pub observations: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl LeaseClient {
    fn member(&mut self) -> usize {
        (self.rng.next_u64() % self.clients.len() as u64) as usize
    }

    /// Grants, renews and abandons leases until `until`.
    pub async fn run(mut self, until: Instant) {
        let mut active: Vec<Active> = Vec::new();
        let mut next_grant = Instant::now();
        while Instant::now() < until {
            let now = Instant::now();
            if now >= next_grant && active.len() < 3 {
                next_grant = now + Duration::from_millis(200 + self.rng.next_u64() % 800);
                if let Some(a) = self.grant().await {
                    active.push(a);
                }
                continue;
            }
            active.retain(|a| a.abandon_at > now);
            if let Some(i) = active.iter().position(|a| a.next_keepalive <= now) {
                let id = active[i].id;
                let gap = active[i].ttl_ms / 3 + self.rng.next_u64() % (active[i].ttl_ms / 4);
                active[i].next_keepalive = now + Duration::from_millis(gap);
                if !self.keepalive(id).await {
                    active.remove(i);
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn grant(&mut self) -> Option<Active> {
        let m = self.member();
        let ttl = 1 + (self.rng.next_u64() % 3) as i64;
        let sent = self.clock.now();
        let mut c = self.clients.lease(m);
        let r = tokio::time::timeout(
            REQUEST_TIMEOUT,
            c.lease_grant(LeaseGrantRequest { ttl, id: 0 }),
        )
        .await
        .ok()?
        .ok()?
        .into_inner();
        if r.id == 0 || !r.error.is_empty() {
            return None;
        }
        lock(&self.log).insert(
            r.id,
            LeaseLog {
                ttl_s: r.ttl,
                renewed_ns: vec![sent],
                gone_ns: Vec::new(),
            },
        );
        let keys = 1 + self.rng.next_u64() % 2;
        for j in 0..keys {
            let m = self.member();
            let mut kv = self.clients.kv(m);
            let put = PutRequest {
                key: Bytes::from(format!("{}{j}", lease_prefix(r.id))),
                value: Bytes::from_static(b"x"),
                lease: r.id,
                ..Default::default()
            };
            // A lost put only means a lease with fewer keys.
            if let Ok(Ok(p)) = tokio::time::timeout(REQUEST_TIMEOUT, kv.put(put)).await {
                self.observe(crate::workload::header_revision(&p.into_inner().header));
            }
        }
        let ttl_ms = r.ttl.max(1) as u64 * 1000;
        let now = Instant::now();
        Some(Active {
            id: r.id,
            ttl_ms,
            next_keepalive: now + Duration::from_millis(ttl_ms / 3),
            abandon_at: now + Duration::from_millis(500 + self.rng.next_u64() % 2500),
        })
    }

    fn observe(&self, revision: u64) {
        lock(&self.observations).push((self.clock.now(), revision));
    }

    /// One keepalive; false once the lease is known to be gone.
    async fn keepalive(&mut self, id: i64) -> bool {
        let m = self.member();
        let mut c = self.clients.lease(m);
        let sent = self.clock.now();
        let req = tokio_stream::iter(vec![LeaseKeepAliveRequest { id }]);
        let call = async {
            let mut answers = c.lease_keep_alive(req).await.ok()?.into_inner();
            answers.message().await.ok()?
        };
        let Ok(Some(r)) = tokio::time::timeout(REQUEST_TIMEOUT, call).await else {
            return true;
        };
        let at = self.clock.now();
        self.observe(crate::workload::header_revision(&r.header));
        let mut log = lock(&self.log);
        let Some(l) = log.get_mut(&id) else {
            return false;
        };
        if r.ttl > 0 {
            l.renewed_ns.push(sent);
            true
        } else {
            l.gone_ns.push(at);
            false
        }
    }
}

/// Checks every lease's end against its renewals (see the module doc). `writes` is
/// the applied history; `observations` every (time, header revision) clients saw.
pub fn check_leases(
    writes: &BTreeMap<u64, Write>,
    leases: &BTreeMap<i64, LeaseLog>,
    observations: &[(u64, u64)],
) -> Result<(), String> {
    // The earliest time each revision was known to be applied: a suffix minimum over
    // observations sorted by revision.
    let mut obs = observations.to_vec();
    obs.sort_by_key(|&(_, rev)| rev);
    let mut applied_by: Vec<(u64, u64)> = Vec::new(); // (revision, earliest time at or above)
    let mut earliest = u64::MAX;
    for &(at, rev) in obs.iter().rev() {
        earliest = earliest.min(at);
        applied_by.push((rev, earliest));
    }
    applied_by.reverse();
    let known_by = |rev: u64| -> Option<u64> {
        let i = applied_by.partition_point(|&(r, _)| r < rev);
        applied_by.get(i).map(|&(_, t)| t)
    };
    for (id, l) in leases {
        let Some(&last) = l.renewed_ns.iter().max() else {
            continue;
        };
        let until = last + l.ttl_s.max(0) as u64 * 1_000_000_000;
        if let Some(&gone) = l.gone_ns.iter().min() {
            if gone < until {
                return Err(format!(
                    "lease expired early: lease {id:x} (TTL {} s) was reported gone at {:.3} s, \
                     but a renewal sent at {:.3} s succeeded",
                    l.ttl_s,
                    gone as f64 / 1e9,
                    last as f64 / 1e9
                ));
            }
        }
        let prefix = lease_prefix(*id);
        let revoked = writes.iter().find(|(_, w)| {
            w.events
                .iter()
                .any(|e| e.kind == EventKind::Delete && e.kv.key.starts_with(prefix.as_bytes()))
        });
        if let Some((&rev, _)) = revoked {
            if let Some(t) = known_by(rev).filter(|&t| t < until) {
                return Err(format!(
                    "lease expired early: lease {id:x} (TTL {} s) had its keys deleted at \
                     revision {rev}, which a response showed applied at {:.3} s, before the \
                     TTL since the renewal sent at {:.3} s ran out ({:.3} s)",
                    l.ttl_s,
                    t as f64 / 1e9,
                    last as f64 / 1e9,
                    until as f64 / 1e9
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::mvcc::{Event, KeyValue, Revision};

    fn revoked_at(rev: u64) -> BTreeMap<u64, Write> {
        let del = Event {
            kind: EventKind::Delete,
            rev: Revision {
                main: rev as i64,
                sub: 0,
            },
            kv: KeyValue {
                key: Bytes::from(format!("{}0", lease_prefix(7))),
                mod_revision: rev as i64,
                ..KeyValue::default()
            },
            prev_kv: None,
        };
        BTreeMap::from([(
            rev,
            Write {
                events: vec![del],
                revoked_lease: None,
                at_ns: 0,
                member: 0,
            },
        )])
    }

    fn lease(renewed_ms: &[u64], gone_ms: &[u64]) -> BTreeMap<i64, LeaseLog> {
        BTreeMap::from([(
            7,
            LeaseLog {
                ttl_s: 2,
                renewed_ns: renewed_ms.iter().map(|m| m * 1_000_000).collect(),
                gone_ns: gone_ms.iter().map(|m| m * 1_000_000).collect(),
            },
        )])
    }

    #[test]
    fn a_revocation_seen_before_the_ttl_ran_out_is_early() {
        let ms = 1_000_000;
        // Revision 9 first seen at 3.5 s: 2 s after a renewal at 1 s is fine.
        let obs = [(3_500 * ms, 9), (3_000 * ms, 8)];
        assert_eq!(
            check_leases(&revoked_at(9), &lease(&[0, 1_000], &[]), &obs),
            Ok(())
        );
        // A response at 2.5 s with revision 10 shows revision 9 applied by then.
        let early = [(3_500 * ms, 9), (2_500 * ms, 10)];
        let e = check_leases(&revoked_at(9), &lease(&[0, 1_000], &[]), &early).unwrap_err();
        assert!(e.contains("expired early"), "{e}");
    }

    #[test]
    fn a_not_found_keepalive_before_the_ttl_ran_out_is_early() {
        let none = BTreeMap::new();
        assert_eq!(
            check_leases(&none, &lease(&[0, 1_000], &[3_000]), &[]),
            Ok(())
        );
        assert!(check_leases(&none, &lease(&[0, 1_000], &[2_999]), &[]).is_err());
    }
}
