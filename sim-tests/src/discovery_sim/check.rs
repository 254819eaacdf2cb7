//! The checks on one discovery run, as a pure function of what the run ended with: the
//! registrations the discovery service holds and each member's outcome.
//!
//! The reference is etcd 3.4's `v2discovery`: the initial cluster is the first `size`
//! registrations by creation index (for create-only keys the modified index is the
//! same); a member whose registration is not among them fails with "cluster is full";
//! two of them with one name fail every member that evaluates them with "found duplicate
//! name"; a create that finds the member's own key fails with "found duplicate id".

use std::collections::BTreeSet;
use std::fmt;

use keel_core::discovery::v2::DiscoveryError;

/// A registration the discovery service holds at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The key's last segment: the member ID in hex.
    pub key: String,
    /// `name=peerURL`.
    pub value: String,
    /// `createdIndex`.
    pub created_index: u64,
    /// `modifiedIndex`.
    pub modified_index: u64,
}

/// How a member's (last) handshake ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryOutcome {
    /// Still running when the run ended.
    Pending,
    /// Discovery completed with this `--initial-cluster`.
    Done {
        /// The cluster, `name=url,...` in the order discovery returned it.
        initial_cluster: String,
    },
    /// Discovery failed.
    Failed(DiscoveryError),
}

/// One would-be member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberFacts {
    /// `--name`.
    pub name: String,
    /// Its member ID (from its peer URLs and the discovery URL).
    pub id: u64,
    /// What it registers: `name=peerURL`.
    pub registration: String,
    /// How its last handshake ended.
    pub outcome: DiscoveryOutcome,
}

/// Everything the checks look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// `_config/size`.
    pub size: u64,
    /// The service's registrations (any order).
    pub registrations: Vec<Registration>,
    /// The members.
    pub members: Vec<MemberFacts>,
    /// No fault at all was injected: every member must reach etcd's verdict.
    pub calm: bool,
}

/// Which check a problem breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// Every member that completes gets the same cluster.
    Agreement,
    /// A completed cluster is exactly the first `size` registrations, in creation order.
    ClusterShape,
    /// A member that completes is in its cluster.
    SelfInclusion,
    /// A member beyond the size never completes; "cluster is full" only beyond it, with
    /// the members that hold the places.
    FullCluster,
    /// Never a cluster with two members of one name; "duplicate name" exactly when the
    /// first `size` registrations share a name.
    DuplicateName,
    /// No member twice: neither in a cluster nor among the registrations.
    NoMemberTwice,
    /// "Duplicate id" only when the member's own registration is there.
    DuplicateId,
    /// Only the errors a run can explain (verdicts and transport failures).
    UnexpectedError,
    /// Nobody is still waiting once `size` members have registered.
    Liveness,
    /// Without faults, every member reaches etcd's verdict.
    CalmOutcome,
}

/// A violated check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Which check.
    pub check: Check,
    /// What was seen.
    pub detail: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.check, self.detail)
    }
}

/// The entries of a `name=url,...` cluster string, in order.
fn entries(cluster: &str) -> Vec<(&str, &str)> {
    cluster
        .split(',')
        .filter(|e| !e.is_empty())
        .map(|e| e.split_once('=').unwrap_or((e, "")))
        .collect()
}

fn has_duplicate_names(cluster: &str) -> bool {
    let mut seen = BTreeSet::new();
    entries(cluster).iter().any(|(n, _)| !seen.insert(*n))
}

/// Runs every check; an empty result means the run is consistent with etcd 3.4.
pub fn check(f: &Facts) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut p = |check: Check, detail: String| problems.push(Problem { check, detail });

    let mut regs = f.registrations.clone();
    regs.sort_by_key(|r| (r.created_index, r.modified_index));
    let first: Vec<&Registration> = regs
        .iter()
        .take(usize::try_from(f.size).unwrap_or(usize::MAX))
        .collect();
    let expected = first
        .iter()
        .map(|r| r.value.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let complete = regs.len() as u64 >= f.size;
    let first_has_dup_names = has_duplicate_names(&expected);
    let in_first = |m: &MemberFacts| {
        first
            .iter()
            .any(|r| r.key == format!("{:x}", m.id) && r.value == m.registration)
    };
    let registered = |m: &MemberFacts| {
        regs.iter()
            .any(|r| r.key == format!("{:x}", m.id) && r.value == m.registration)
    };

    // No member twice among the registrations: one key each, one registration per value.
    let mut keys = BTreeSet::new();
    let mut values = BTreeSet::new();
    for r in &regs {
        if !keys.insert(r.key.as_str()) {
            p(
                Check::NoMemberTwice,
                format!("key {} registered twice", r.key),
            );
        }
        if !values.insert(r.value.as_str()) {
            p(
                Check::NoMemberTwice,
                format!("{} registered under two keys", r.value),
            );
        }
        if let Some(m) = f.members.iter().find(|m| m.registration == r.value) {
            if r.key != format!("{:x}", m.id) {
                p(
                    Check::NoMemberTwice,
                    format!(
                        "{} registered under {}, not its ID {:x}",
                        r.value, r.key, m.id
                    ),
                );
            }
        }
    }

    let done: Vec<(&MemberFacts, &str)> = f
        .members
        .iter()
        .filter_map(|m| match &m.outcome {
            DiscoveryOutcome::Done { initial_cluster } => Some((m, initial_cluster.as_str())),
            _ => None,
        })
        .collect();

    let distinct: BTreeSet<&str> = done.iter().map(|(_, c)| *c).collect();
    if distinct.len() > 1 {
        p(
            Check::Agreement,
            format!("members completed with different clusters: {distinct:?}"),
        );
    }

    for &(m, cluster) in &done {
        let es = entries(cluster);
        if es.len() as u64 != f.size {
            p(
                Check::ClusterShape,
                format!(
                    "{} completed with {} members, size is {}: {cluster}",
                    m.name,
                    es.len(),
                    f.size
                ),
            );
        }
        if cluster != expected {
            p(
                Check::ClusterShape,
                format!(
                    "{} completed with {cluster}; the first {} registrations by index are {expected}",
                    m.name, f.size
                ),
            );
        }
        let mine: Vec<(&str, &str)> = entries(&m.registration);
        if !mine.iter().all(|e| es.contains(e)) || !in_first(m) {
            p(
                Check::SelfInclusion,
                format!(
                    "{} ({:x}) completed into {cluster}, which does not hold its registration {}",
                    m.name, m.id, m.registration
                ),
            );
        }
        if !in_first(m) {
            p(
                Check::FullCluster,
                format!(
                    "{} ({:x}) is beyond the first {} registrations yet completed",
                    m.name, m.id, f.size
                ),
            );
        }
        if has_duplicate_names(cluster) {
            p(
                Check::DuplicateName,
                format!(
                    "{} completed with two members of one name: {cluster}",
                    m.name
                ),
            );
        } else if first_has_dup_names {
            p(
                Check::DuplicateName,
                format!(
                    "{} completed although the first registrations share a name: {expected}",
                    m.name
                ),
            );
        }
        let mut seen_entries = BTreeSet::new();
        let mut seen_urls = BTreeSet::new();
        for e in &es {
            if !seen_entries.insert(*e) || !seen_urls.insert(e.1) {
                p(
                    Check::NoMemberTwice,
                    format!("{} completed with {}={} twice: {cluster}", m.name, e.0, e.1),
                );
            }
        }
    }

    for m in &f.members {
        match &m.outcome {
            DiscoveryOutcome::Failed(DiscoveryError::FullCluster(full)) => {
                if in_first(m) {
                    p(
                        Check::FullCluster,
                        format!(
                            "{} ({:x}) holds one of the first {} places but was told the cluster is full",
                            m.name, m.id, f.size
                        ),
                    );
                }
                if full.cluster != expected || full.size != f.size {
                    p(
                        Check::FullCluster,
                        format!(
                            "{} was told the cluster is full with {full}, but the first registrations are {expected} (size {})",
                            m.name, f.size
                        ),
                    );
                }
            }
            DiscoveryOutcome::Failed(DiscoveryError::DuplicateName { cluster }) => {
                if !first_has_dup_names {
                    p(
                        Check::DuplicateName,
                        format!(
                            "{} failed with duplicate name but the first registrations are {expected}",
                            m.name
                        ),
                    );
                } else if cluster != &expected {
                    p(
                        Check::DuplicateName,
                        format!(
                            "{} failed with duplicate name over {cluster}, the first registrations are {expected}",
                            m.name
                        ),
                    );
                }
            }
            DiscoveryOutcome::Failed(DiscoveryError::DuplicateId) => {
                if !registered(m) {
                    p(
                        Check::DuplicateId,
                        format!(
                            "{} ({:x}) failed with duplicate id but no registration {} is under its key",
                            m.name, m.id, m.registration
                        ),
                    );
                }
            }
            // Transport failures: the faults explain them (the calm check below does not
            // accept them without faults).
            DiscoveryOutcome::Failed(
                DiscoveryError::Timeout(_)
                | DiscoveryError::Unavailable(_)
                | DiscoveryError::TooManyRetries,
            ) => {}
            DiscoveryOutcome::Failed(e) => p(
                Check::UnexpectedError,
                format!("{} failed with {e:?} ({e})", m.name),
            ),
            DiscoveryOutcome::Pending => {
                if complete {
                    p(
                        Check::Liveness,
                        format!(
                            "{} ({:x}) still waiting although {} of {} members registered",
                            m.name,
                            m.id,
                            regs.len(),
                            f.size
                        ),
                    );
                } else if f.calm {
                    p(
                        Check::CalmOutcome,
                        format!(
                            "{} still waiting without any fault ({} of {} registered)",
                            m.name,
                            regs.len(),
                            f.size
                        ),
                    );
                }
            }
            DiscoveryOutcome::Done { .. } => {}
        }
        if f.calm {
            let verdict_ok = match &m.outcome {
                DiscoveryOutcome::Done { .. } => in_first(m) && !first_has_dup_names,
                DiscoveryOutcome::Failed(DiscoveryError::FullCluster(_)) => !in_first(m),
                DiscoveryOutcome::Failed(DiscoveryError::DuplicateName { .. }) => {
                    in_first(m) && first_has_dup_names
                }
                _ => false,
            };
            if !verdict_ok && m.outcome != DiscoveryOutcome::Pending {
                p(
                    Check::CalmOutcome,
                    format!(
                        "{} ({:x}) ended with {:?} without any fault; the first registrations are {expected}",
                        m.name, m.id, m.outcome
                    ),
                );
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::discovery::v2::FullCluster;

    fn reg(id: u64, value: &str, index: u64) -> Registration {
        Registration {
            key: format!("{id:x}"),
            value: value.into(),
            created_index: index,
            modified_index: index,
        }
    }

    fn member(i: u64, name: &str, outcome: DiscoveryOutcome) -> MemberFacts {
        MemberFacts {
            name: name.into(),
            id: 0x100 + i,
            registration: format!("{name}=http://10.0.2.{i}:2380"),
            outcome,
        }
    }

    fn done(c: &str) -> DiscoveryOutcome {
        DiscoveryOutcome::Done {
            initial_cluster: c.into(),
        }
    }

    const C3: &str = "m1=http://10.0.2.1:2380,m2=http://10.0.2.2:2380,m3=http://10.0.2.3:2380";

    /// Three members and a fourth beyond the size, registered in order 1, 2, 3, 4.
    fn good() -> Facts {
        Facts {
            size: 3,
            registrations: vec![
                reg(0x103, "m3=http://10.0.2.3:2380", 9),
                reg(0x101, "m1=http://10.0.2.1:2380", 5),
                reg(0x104, "m4=http://10.0.2.4:2380", 11),
                reg(0x102, "m2=http://10.0.2.2:2380", 7),
            ],
            members: vec![
                member(1, "m1", done(C3)),
                member(2, "m2", done(C3)),
                member(3, "m3", done(C3)),
                member(
                    4,
                    "m4",
                    DiscoveryOutcome::Failed(DiscoveryError::FullCluster(FullCluster {
                        cluster: C3.into(),
                        size: 3,
                    })),
                ),
            ],
            calm: true,
        }
    }

    fn checks(f: &Facts) -> BTreeSet<Check> {
        check(f).into_iter().map(|p| p.check).collect()
    }

    #[test]
    fn a_good_run_passes() {
        assert_eq!(check(&good()), vec![]);
        // The same with faults: transport failures and a pending member are fine while
        // the cluster is incomplete.
        let mut f = good();
        f.calm = false;
        f.members[2].outcome = DiscoveryOutcome::Failed(DiscoveryError::Timeout("x".into()));
        f.members[1].outcome = DiscoveryOutcome::Failed(DiscoveryError::DuplicateId);
        assert_eq!(check(&f), vec![]);
        f.registrations.retain(|r| r.key != "103" && r.key != "104");
        f.members[0].outcome = DiscoveryOutcome::Pending;
        f.members[3].outcome =
            DiscoveryOutcome::Failed(DiscoveryError::Unavailable("reset".into()));
        assert_eq!(check(&f), vec![]);
    }

    #[test]
    fn agreement_catches_two_clusters() {
        let mut f = good();
        f.members[1].outcome =
            done("m1=http://10.0.2.1:2380,m2=http://10.0.2.2:2380,m4=http://10.0.2.4:2380");
        assert!(checks(&f).contains(&Check::Agreement), "{:?}", check(&f));
    }

    #[test]
    fn cluster_shape_catches_wrong_size_and_order() {
        let mut f = good();
        // Everyone agrees on a cluster of two.
        for m in &mut f.members[..3] {
            m.outcome = done("m1=http://10.0.2.1:2380,m2=http://10.0.2.2:2380");
        }
        assert!(checks(&f).contains(&Check::ClusterShape));
        // The right members in the wrong order (not by modifiedIndex).
        let mut f = good();
        for m in &mut f.members[..3] {
            m.outcome =
                done("m2=http://10.0.2.2:2380,m1=http://10.0.2.1:2380,m3=http://10.0.2.3:2380");
        }
        assert_eq!(checks(&f), BTreeSet::from([Check::ClusterShape]));
    }

    #[test]
    fn self_inclusion_catches_a_member_outside_its_cluster() {
        let mut f = good();
        f.calm = false;
        // m3 never registered, yet completes with m1, m2 and m4.
        let c = "m1=http://10.0.2.1:2380,m2=http://10.0.2.2:2380,m4=http://10.0.2.4:2380";
        f.registrations.retain(|r| r.key != "103");
        f.members[3].outcome = done(c);
        f.members[2].outcome = done(c);
        f.members[1].outcome = done(c);
        f.members[0].outcome = done(c);
        assert!(
            checks(&f).contains(&Check::SelfInclusion),
            "{:?}",
            check(&f)
        );
    }

    #[test]
    fn full_cluster_catches_a_member_beyond_the_size_completing() {
        let mut f = good();
        f.members[3].outcome = done(C3);
        assert!(checks(&f).contains(&Check::FullCluster));
        // ... and a member holding a place told the cluster is full.
        let mut f = good();
        f.members[0].outcome = DiscoveryOutcome::Failed(DiscoveryError::FullCluster(FullCluster {
            cluster: C3.into(),
            size: 3,
        }));
        assert!(checks(&f).contains(&Check::FullCluster));
        // ... and "full" naming the wrong members.
        let mut f = good();
        f.members[3].outcome = DiscoveryOutcome::Failed(DiscoveryError::FullCluster(FullCluster {
            cluster: "m1=http://10.0.2.1:2380".into(),
            size: 3,
        }));
        assert!(checks(&f).contains(&Check::FullCluster));
    }

    #[test]
    fn duplicate_name_catches_a_cluster_with_one_name_twice() {
        // m2 and m3 both call themselves "m2"; a member completes anyway.
        let c = "m1=http://10.0.2.1:2380,m2=http://10.0.2.2:2380,m2=http://10.0.2.3:2380";
        let mut f = good();
        f.registrations[0].value = "m2=http://10.0.2.3:2380".into();
        f.members[2].name = "m2".into();
        f.members[2].registration = "m2=http://10.0.2.3:2380".into();
        for m in &mut f.members[..3] {
            m.outcome = done(c);
        }
        f.members[3].outcome = DiscoveryOutcome::Failed(DiscoveryError::FullCluster(FullCluster {
            cluster: c.into(),
            size: 3,
        }));
        assert!(
            checks(&f).contains(&Check::DuplicateName),
            "{:?}",
            check(&f)
        );
        // The right outcome: everyone holding a place fails with duplicate name.
        for m in &mut f.members[..3] {
            m.outcome =
                DiscoveryOutcome::Failed(DiscoveryError::DuplicateName { cluster: c.into() });
        }
        assert_eq!(check(&f), vec![]);
        // Duplicate name where the names differ is wrong too.
        let mut f = good();
        f.members[0].outcome =
            DiscoveryOutcome::Failed(DiscoveryError::DuplicateName { cluster: C3.into() });
        assert!(checks(&f).contains(&Check::DuplicateName));
    }

    #[test]
    fn no_member_twice_catches_repeated_registrations() {
        // One member registered twice (as a lost response and a blind retry would).
        let mut f = good();
        f.registrations
            .push(reg(0x999, "m1=http://10.0.2.1:2380", 6));
        assert!(
            checks(&f).contains(&Check::NoMemberTwice),
            "{:?}",
            check(&f)
        );
        let mut f = good();
        f.registrations
            .push(reg(0x101, "m1=http://10.0.2.1:2380", 12));
        assert!(checks(&f).contains(&Check::NoMemberTwice));
        // A cluster holding one member twice.
        let mut f = good();
        let c = "m1=http://10.0.2.1:2380,m1=http://10.0.2.1:2380,m2=http://10.0.2.2:2380";
        f.members[0].outcome = done(c);
        assert!(checks(&f).contains(&Check::NoMemberTwice));
    }

    #[test]
    fn duplicate_id_needs_the_own_registration() {
        let mut f = good();
        f.calm = false;
        f.registrations.retain(|r| r.key != "104");
        f.members[3].outcome = DiscoveryOutcome::Failed(DiscoveryError::DuplicateId);
        assert!(checks(&f).contains(&Check::DuplicateId));
    }

    #[test]
    fn unexpected_errors_are_reported() {
        let mut f = good();
        f.members[0].outcome = DiscoveryOutcome::Failed(DiscoveryError::InvalidJson);
        assert!(checks(&f).contains(&Check::UnexpectedError));
    }

    #[test]
    fn liveness_catches_a_member_stuck_after_the_cluster_filled() {
        let mut f = good();
        f.calm = false;
        f.members[2].outcome = DiscoveryOutcome::Pending;
        assert_eq!(checks(&f), BTreeSet::from([Check::Liveness]));
    }

    #[test]
    fn calm_outcome_catches_failures_without_faults() {
        let mut f = good();
        f.members[1].outcome = DiscoveryOutcome::Failed(DiscoveryError::Timeout("x".into()));
        assert!(checks(&f).contains(&Check::CalmOutcome));
        let mut f = good();
        f.registrations.retain(|r| r.key != "103" && r.key != "104");
        f.members[2].outcome = DiscoveryOutcome::Pending;
        f.members[0].outcome = DiscoveryOutcome::Pending;
        f.members[1].outcome = DiscoveryOutcome::Pending;
        f.members[3].outcome = DiscoveryOutcome::Failed(DiscoveryError::DuplicateId);
        assert!(checks(&f).contains(&Check::CalmOutcome));
    }
}
