//! The auth store: etcd's exact results for every auth command, enabling and the root
//! role, token staleness, permission checks at apply (a refused command has no effect),
//! the auth store in snapshot images (old images without it still load), and the range
//! union checked against a brute-force model.

use bytes::Bytes;
use keel_core::auth::{
    covers, AuthCommand as C, AuthError as E, AuthInfo, AuthOutcome, AuthStore, PermKind,
    Permission,
};
use keel_core::mvcc::{
    Compare, CompareResult, CompareTarget, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use keel_core::node::{encode_command, Command, Outcome, Proposal, StateMachine};
use keel_core::raft::{Entry, EntryPayload, LogIndex, Term, Time};
use proptest::prelude::*;

fn s(v: &str) -> String {
    v.to_owned()
}

fn b(v: &[u8]) -> Bytes {
    Bytes::copy_from_slice(v)
}

fn perm(kind: PermKind, key: &[u8], range_end: &[u8]) -> Permission {
    Permission {
        kind,
        key: b(key),
        range_end: b(range_end),
    }
}

fn user_add(name: &str) -> C {
    C::UserAdd {
        name: s(name),
        password_hash: s("hash"),
        no_password: false,
    }
}

fn grant_role(user: &str, role: &str) -> C {
    C::UserGrantRole {
        user: s(user),
        role: s(role),
    }
}

fn ok(a: &mut AuthStore, c: C) {
    assert_eq!(a.apply(&c), Ok(AuthOutcome::Done), "{c:?}");
}

/// Root user with the root role, and user "u" with role "r" granting `perms`; enabled.
fn enabled_store(perms: &[Permission]) -> AuthStore {
    let mut a = AuthStore::new();
    ok(&mut a, user_add("root"));
    ok(&mut a, C::RoleAdd { name: s("root") });
    ok(&mut a, grant_role("root", "root"));
    ok(&mut a, user_add("u"));
    ok(&mut a, C::RoleAdd { name: s("r") });
    ok(&mut a, grant_role("u", "r"));
    for p in perms {
        ok(
            &mut a,
            C::RoleGrantPermission {
                name: s("r"),
                perm: p.clone(),
            },
        );
    }
    ok(&mut a, C::Enable);
    a
}

fn who(a: &AuthStore, user: &str) -> AuthInfo {
    AuthInfo {
        user: s(user),
        revision: a.revision(),
    }
}

#[test]
fn messages_and_grpc_codes_are_etcds() {
    assert_eq!(
        E::RootRoleNotExist.to_string(),
        "etcdserver: root user does not have root role"
    );
    assert_eq!(
        E::AuthFailed.to_string(),
        "etcdserver: authentication failed, invalid user ID or password"
    );
    assert_eq!(
        E::AuthOldRevision.to_string(),
        "etcdserver: revision of auth store is old"
    );
    assert_eq!(E::RootUserNotExist.grpc_code(), 9);
    assert_eq!(E::PermissionNotGranted.grpc_code(), 9);
    assert_eq!(E::UserEmpty.grpc_code(), 3);
    assert_eq!(E::InvalidAuthMgmt.grpc_code(), 3);
    assert_eq!(E::PermissionDenied.grpc_code(), 7);
    assert_eq!(E::InvalidAuthToken.grpc_code(), 16);
    assert_eq!(PermKind::from_i32(2), Some(PermKind::ReadWrite));
    assert_eq!(PermKind::from_i32(3), None);
}

#[test]
fn user_and_role_errors() {
    let mut a = AuthStore::new();
    assert_eq!(a.revision(), 1);
    assert!(!a.enabled());
    assert_eq!(a.apply(&user_add("")), Err(E::UserEmpty));
    ok(&mut a, user_add("u"));
    assert_eq!(a.apply(&user_add("u")), Err(E::UserAlreadyExist));
    assert_eq!(
        a.apply(&C::UserDelete { name: s("x") }),
        Err(E::UserNotFound)
    );
    assert_eq!(
        a.apply(&C::UserChangePassword {
            name: s("x"),
            password_hash: s("h")
        }),
        Err(E::UserNotFound)
    );
    assert_eq!(a.apply(&grant_role("x", "r")), Err(E::UserNotFound));
    assert_eq!(a.apply(&grant_role("u", "r")), Err(E::RoleNotFound));
    assert_eq!(a.apply(&C::RoleAdd { name: s("") }), Err(E::RoleEmpty));
    ok(&mut a, C::RoleAdd { name: s("r") });
    assert_eq!(
        a.apply(&C::RoleAdd { name: s("r") }),
        Err(E::RoleAlreadyExist)
    );
    ok(&mut a, grant_role("u", "r"));
    // Granting twice: Ok without a change.
    let rev = a.revision();
    ok(&mut a, grant_role("u", "r"));
    assert_eq!(a.revision(), rev);
    // The root role may be granted before it exists.
    ok(&mut a, grant_role("u", "root"));
    assert_eq!(
        a.user("u").map(|u| u.roles.clone()),
        Some(vec![s("r"), s("root")])
    );
    assert_eq!(
        a.apply(&C::UserRevokeRole {
            user: s("x"),
            role: s("r")
        }),
        Err(E::UserNotFound)
    );
    assert_eq!(
        a.apply(&C::UserRevokeRole {
            user: s("u"),
            role: s("z")
        }),
        Err(E::RoleNotGranted)
    );
    assert_eq!(
        a.apply(&C::RoleDelete { name: s("z") }),
        Err(E::RoleNotFound)
    );
    let missing = C::RoleGrantPermission {
        name: s("z"),
        perm: perm(PermKind::Read, b"a", b""),
    };
    assert_eq!(a.apply(&missing), Err(E::RoleNotFound));
    let revoke = |name: &str, key: &[u8], end: &[u8]| C::RoleRevokePermission {
        name: s(name),
        key: b(key),
        range_end: b(end),
    };
    assert_eq!(a.apply(&revoke("z", b"a", b"")), Err(E::RoleNotFound));
    assert_eq!(
        a.apply(&revoke("r", b"a", b"")),
        Err(E::PermissionNotGranted)
    );

    // Permissions: sorted, the kind of an existing range replaced.
    for p in [
        perm(PermKind::Read, b"b", b""),
        perm(PermKind::Read, b"a", b"c"),
        perm(PermKind::Write, b"a", b""),
        perm(PermKind::ReadWrite, b"a", b"c"),
    ] {
        ok(
            &mut a,
            C::RoleGrantPermission {
                name: s("r"),
                perm: p,
            },
        );
    }
    assert_eq!(
        a.role("r").map(|r| r.perms),
        Some(vec![
            perm(PermKind::Write, b"a", b""),
            perm(PermKind::ReadWrite, b"a", b"c"),
            perm(PermKind::Read, b"b", b""),
        ])
    );
    ok(&mut a, revoke("r", b"a", b"c"));
    assert_eq!(
        a.apply(&revoke("r", b"a", b"c")),
        Err(E::PermissionNotGranted)
    );

    // Deleting a role revokes it from every user.
    ok(&mut a, C::RoleDelete { name: s("r") });
    assert_eq!(a.user("u").map(|u| u.roles.clone()), Some(vec![s("root")]));
    assert_eq!(a.role_names(), Vec::<String>::new());
    ok(&mut a, user_add("a"));
    assert_eq!(a.user_names(), vec![s("a"), s("u")]);
    ok(&mut a, C::UserDelete { name: s("a") });
    assert_eq!(a.user_names(), vec![s("u")]);
}

#[test]
fn enable_disable_and_the_root_role() {
    let mut a = AuthStore::new();
    assert_eq!(a.apply(&C::Enable), Err(E::RootUserNotExist));
    ok(&mut a, user_add("root"));
    assert_eq!(a.apply(&C::Enable), Err(E::RootRoleNotExist));
    // Disabling a disabled store: Ok, no change.
    let rev = a.revision();
    ok(&mut a, C::Disable);
    assert_eq!(a.revision(), rev);
    ok(&mut a, C::RoleAdd { name: s("root") });
    ok(&mut a, grant_role("root", "root"));
    // Before enabling: root may be deleted and revoked.
    let mut b2 = a.clone();
    ok(
        &mut b2,
        C::UserRevokeRole {
            user: s("root"),
            role: s("root"),
        },
    );
    ok(&mut b2, C::RoleDelete { name: s("root") });
    ok(&mut b2, C::UserDelete { name: s("root") });

    ok(&mut a, C::Enable);
    assert!(a.enabled());
    let rev = a.revision();
    ok(&mut a, C::Enable);
    assert_eq!(a.revision(), rev, "enabling twice changes nothing");
    assert_eq!(
        a.apply(&C::UserDelete { name: s("root") }),
        Err(E::InvalidAuthMgmt)
    );
    assert_eq!(
        a.apply(&C::UserRevokeRole {
            user: s("root"),
            role: s("root")
        }),
        Err(E::InvalidAuthMgmt)
    );
    assert_eq!(
        a.apply(&C::RoleDelete { name: s("root") }),
        Err(E::InvalidAuthMgmt)
    );
    // RoleGet of root lists what was granted to it (nothing), as etcd 3.4 does.
    assert_eq!(a.role("root").map(|r| r.perms), Some(vec![]));
    ok(&mut a, C::Disable);
    assert!(!a.enabled());
    assert_eq!(a.revision(), rev + 1);
}

#[test]
fn authenticate_and_passwords() {
    let mut a = AuthStore::new();
    ok(&mut a, user_add("root"));
    ok(
        &mut a,
        C::UserAdd {
            name: s("np"),
            password_hash: s("ignored"),
            no_password: true,
        },
    );
    let auth = |name: &str| C::Authenticate {
        name: s(name),
        token: s("tok"),
    };
    assert_eq!(a.apply(&auth("root")), Err(E::AuthNotEnabled));
    assert_eq!(a.password_hash("root"), Err(E::AuthNotEnabled));
    ok(&mut a, grant_role("root", "root"));
    ok(&mut a, C::Enable);
    assert_eq!(a.password_hash("root"), Ok("hash"));
    assert_eq!(a.password_hash("np"), Err(E::AuthFailed));
    assert_eq!(a.password_hash("nobody"), Err(E::AuthFailed));
    assert_eq!(a.user("np").map(|u| u.password_hash.as_str()), Some(""));
    assert_eq!(a.apply(&auth("nobody")), Err(E::AuthFailed));
    assert_eq!(a.apply(&auth("np")), Err(E::AuthFailed));
    let rev = a.revision();
    assert_eq!(
        a.apply(&auth("root")),
        Ok(AuthOutcome::Authenticated {
            name: s("root"),
            token: s("tok"),
            revision: rev
        })
    );
    assert_eq!(a.revision(), rev, "authenticate changes nothing");
    ok(
        &mut a,
        C::UserChangePassword {
            name: s("root"),
            password_hash: s("h2"),
        },
    );
    assert_eq!(a.password_hash("root"), Ok("h2"));
    assert_eq!(a.revision(), rev + 1);
}

#[test]
fn checks_and_token_staleness() {
    let a = enabled_store(&[perm(PermKind::Read, b"a", b"c")]);
    let u = who(&a, "u");
    assert_eq!(a.check(Some(&u), b"b", b"", PermKind::Read), Ok(()));
    assert_eq!(
        a.check(Some(&u), b"b", b"", PermKind::Write),
        Err(E::PermissionDenied)
    );
    assert_eq!(
        a.check(Some(&u), b"b", b"d", PermKind::Read),
        Err(E::PermissionDenied)
    );
    assert_eq!(a.check(None, b"b", b"", PermKind::Read), Err(E::UserEmpty));
    let zero = AuthInfo {
        user: s("u"),
        revision: 0,
    };
    assert_eq!(
        a.check(Some(&zero), b"b", b"", PermKind::Read),
        Err(E::UserEmpty)
    );
    let ghost = who(&a, "ghost");
    assert_eq!(
        a.check(Some(&ghost), b"b", b"", PermKind::Read),
        Err(E::PermissionDenied)
    );
    let root = who(&a, "root");
    assert_eq!(a.check(Some(&root), b"\0", b"\0", PermKind::Write), Ok(()));
    assert_eq!(a.check_admin(Some(&root)), Ok(()));
    assert_eq!(a.check_admin(Some(&u)), Err(E::PermissionDenied));
    assert_eq!(a.check_admin(Some(&ghost)), Err(E::UserNotFound));
    assert_eq!(a.check_admin(None), Err(E::UserEmpty));

    // Any change makes earlier tokens stale (admin checks ignore the revision, as etcd).
    let mut a2 = a.clone();
    ok(&mut a2, C::RoleAdd { name: s("other") });
    assert_eq!(
        a2.check(Some(&u), b"b", b"", PermKind::Read),
        Err(E::AuthOldRevision)
    );
    assert_eq!(
        a2.check(Some(&root), b"b", b"", PermKind::Read),
        Err(E::AuthOldRevision)
    );
    assert_eq!(a2.check_admin(Some(&root)), Ok(()));
    assert_eq!(
        a2.check(Some(&who(&a2, "u")), b"b", b"", PermKind::Read),
        Ok(())
    );

    // Disabled: everything allowed.
    let d = AuthStore::new();
    assert_eq!(d.check(None, b"x", b"", PermKind::Write), Ok(()));
    assert_eq!(d.check_admin(None), Ok(()));
}

fn entry(index: u64, seq: u64, auth: Option<AuthInfo>, cmd: Command) -> Entry {
    Entry {
        term: Term(1),
        index: LogIndex(index),
        payload: EntryPayload::Normal(
            encode_command(&Proposal {
                origin: 1,
                seq,
                auth,
                cmd,
            })
            .into(),
        ),
    }
}

/// A state machine driven through encoded entries.
struct Sm {
    sm: StateMachine,
    index: u64,
}

impl Sm {
    fn new() -> Sm {
        Sm {
            sm: StateMachine::new(u64::MAX, 1, []),
            index: 0,
        }
    }

    fn run(&mut self, auth: Option<AuthInfo>, cmd: Command) -> Outcome {
        self.index += 1;
        let e = entry(self.index, self.index, auth, cmd);
        self.sm.apply(&e, Time(0)).expect("answered").outcome
    }

    fn auth(&mut self, who: Option<AuthInfo>, c: C) -> Outcome {
        self.run(who, Command::Auth(c))
    }

    fn me(&self, user: &str) -> AuthInfo {
        AuthInfo {
            user: s(user),
            revision: self.sm.auth.revision(),
        }
    }
}

fn put(key: &[u8]) -> PutRequest {
    PutRequest {
        key: b(key),
        value: b(b"v"),
        ..PutRequest::default()
    }
}

/// Auth enabled through the log; user "u" may write [a, c) and read "a" only.
fn enabled_sm() -> Sm {
    let mut m = Sm::new();
    for c in [
        user_add("root"),
        C::RoleAdd { name: s("root") },
        grant_role("root", "root"),
        user_add("u"),
        C::RoleAdd { name: s("r") },
        grant_role("u", "r"),
        C::RoleGrantPermission {
            name: s("r"),
            perm: perm(PermKind::Write, b"a", b"c"),
        },
        C::RoleGrantPermission {
            name: s("r"),
            perm: perm(PermKind::Read, b"a", b""),
        },
        C::Enable,
    ] {
        assert_eq!(m.auth(None, c), Outcome::Auth(Ok(AuthOutcome::Done)));
    }
    m
}

#[test]
fn permission_checks_at_apply() {
    let mut m = enabled_sm();
    let u = m.me("u");
    let root = m.me("root");
    let rev = m.sm.kv.store.revision();

    // Refused puts change nothing.
    assert_eq!(
        m.run(Some(u.clone()), Command::Put(put(b"x"))),
        Outcome::Denied(E::PermissionDenied)
    );
    assert_eq!(
        m.run(None, Command::Put(put(b"a"))),
        Outcome::Denied(E::UserEmpty)
    );
    let with_prev = PutRequest {
        prev_kv: true,
        ..put(b"b")
    };
    assert_eq!(
        m.run(Some(u.clone()), Command::Put(with_prev)),
        Outcome::Denied(E::PermissionDenied),
        "prev_kv needs read"
    );
    assert_eq!(m.sm.kv.store.revision(), rev);
    assert!(matches!(
        m.run(Some(u.clone()), Command::Put(put(b"b"))),
        Outcome::Put(Ok(_))
    ));
    assert_eq!(m.sm.kv.store.revision(), rev + 1);

    // A txn touching a forbidden key only in its failure branch is refused.
    let txn = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: b(b"a"),
            range_end: Bytes::new(),
        }],
        success: vec![RequestOp::Put(put(b"a"))],
        failure: vec![RequestOp::Txn(TxnRequest {
            success: vec![RequestOp::Put(put(b"zz"))],
            ..TxnRequest::default()
        })],
    };
    assert_eq!(
        m.run(Some(u.clone()), Command::Txn(txn.clone())),
        Outcome::Denied(E::PermissionDenied)
    );
    assert_eq!(m.sm.kv.store.revision(), rev + 1);
    // A compare on a key the user may not read is refused too.
    let mut bad_compare = txn.clone();
    bad_compare.failure.clear();
    bad_compare.compare[0].key = b(b"b");
    assert_eq!(
        m.sm.authorize(Some(&u), &Command::Txn(bad_compare)),
        Err(E::PermissionDenied)
    );
    let mut fine = txn.clone();
    fine.failure.clear();
    assert!(matches!(
        m.run(Some(u.clone()), Command::Txn(fine)),
        Outcome::Txn(Ok(_))
    ));
    assert!(matches!(
        m.run(Some(root.clone()), Command::Txn(txn)),
        Outcome::Txn(Ok(_))
    ));

    // Ranges (the runtime checks them before serving reads).
    let range = |k: &[u8], e: &[u8]| RangeRequest {
        key: b(k),
        range_end: b(e),
        ..RangeRequest::default()
    };
    assert_eq!(m.sm.authorize_range(Some(&u), &range(b"a", b"")), Ok(()));
    assert_eq!(
        m.sm.authorize_range(Some(&u), &range(b"a", b"b")),
        Err(E::PermissionDenied)
    );

    // Auth changes need the root role; compaction (as in etcd 3.4) and Authenticate
    // need nothing.
    assert!(matches!(
        m.run(
            Some(u.clone()),
            Command::Compact {
                revision: 1,
                physical: false
            }
        ),
        Outcome::Compact(_)
    ));
    assert_eq!(
        m.auth(Some(u.clone()), C::RoleAdd { name: s("x") }),
        Outcome::Denied(E::PermissionDenied)
    );
    assert_eq!(m.sm.auth.role("x"), None);
    // A simple token names its entry's index (etcd's "%s.%d"); a JWT's (empty) does not.
    let index = m.index + 1;
    let Outcome::Auth(Ok(AuthOutcome::Authenticated { token, .. })) = m.auth(
        None,
        C::Authenticate {
            name: s("u"),
            token: s("t"),
        },
    ) else {
        panic!("authenticated");
    };
    assert_eq!(token, format!("t.{index}"));
    assert!(matches!(
        m.auth(
            None,
            C::Authenticate {
                name: s("u"),
                token: s(""),
            },
        ),
        Outcome::Auth(Ok(AuthOutcome::Authenticated { token, .. })) if token.is_empty()
    ));

    // Leases: attaching a key to a lease holding a key the user may not write, or
    // revoking such a lease, is refused.
    assert!(matches!(
        m.run(None, Command::LeaseGrant { id: 7, ttl: 100 }),
        Outcome::LeaseGrant(Ok(_))
    ));
    let leased = |k: &[u8]| PutRequest { lease: 7, ..put(k) };
    assert!(matches!(
        m.run(Some(root.clone()), Command::Put(leased(b"zz"))),
        Outcome::Put(Ok(_))
    ));
    assert_eq!(
        m.run(Some(u.clone()), Command::Put(leased(b"a"))),
        Outcome::Denied(E::PermissionDenied)
    );
    assert_eq!(
        m.run(Some(u.clone()), Command::LeaseRevoke { id: 7 }),
        Outcome::Denied(E::PermissionDenied)
    );
    assert_eq!(
        m.run(Some(AuthInfo::member()), Command::LeaseRevoke { id: 7 }),
        Outcome::LeaseRevoke(Ok(()))
    );

    // After a change to the store the old token is stale; a root change goes through.
    assert_eq!(
        m.auth(Some(root.clone()), C::RoleAdd { name: s("x") }),
        Outcome::Auth(Ok(AuthOutcome::Done))
    );
    assert_eq!(
        m.run(Some(u), Command::Put(put(b"a"))),
        Outcome::Denied(E::AuthOldRevision)
    );
    // Disabling lets everyone through.
    assert_eq!(
        m.auth(Some(root), C::Disable),
        Outcome::Auth(Ok(AuthOutcome::Done))
    );
    assert!(matches!(
        m.run(None, Command::Put(put(b"x"))),
        Outcome::Put(Ok(_))
    ));
}

#[test]
fn a_denied_proposal_is_still_deduplicated() {
    let mut m = enabled_sm();
    m.index += 1;
    let e = entry(m.index, 999, None, Command::Put(put(b"a")));
    assert_eq!(
        m.sm.apply(&e, Time(0)).map(|a| a.outcome),
        Some(Outcome::Denied(E::UserEmpty))
    );
    m.index += 1;
    let again = entry(m.index, 999, Some(m.me("root")), Command::Put(put(b"a")));
    assert_eq!(m.sm.apply(&again, Time(0)), None);
}

#[test]
fn snapshots_carry_the_auth_store() {
    let m = enabled_sm();
    let image = m.sm.snapshot();
    let restored = StateMachine::restore(&image, u64::MAX, 1).expect("image");
    assert_eq!(restored.auth, m.sm.auth);
    assert!(restored.auth.enabled());

    // Hostile images never panic: every truncation and single-byte change is refused or
    // restores.
    for cut in 0..image.len() {
        let _ = StateMachine::restore(&image[..cut], u64::MAX, 1);
    }

    // The auth image alone: every strict prefix is refused.
    let mut w = Vec::new();
    m.sm.auth.encode(&mut w);
    assert_eq!(AuthStore::decode(&w), Ok((m.sm.auth.clone(), w.len())));
    for cut in 0..w.len() {
        assert!(AuthStore::decode(&w[..cut]).is_err(), "prefix {cut}");
    }
    for i in 0..w.len() {
        for v in [0u8, 1, 3, 0xff] {
            let mut x = w.clone();
            x[i] = v;
            let _ = AuthStore::decode(&x);
        }
    }
}

#[test]
fn an_image_without_the_auth_section_still_restores() {
    let mut m = Sm::new();
    assert!(matches!(
        m.run(None, Command::Put(put(b"k"))),
        Outcome::Put(Ok(_))
    ));
    let image = m.sm.snapshot();
    // Cut the auth section (an empty store's image) and re-checksum: an older image.
    let mut empty = Vec::new();
    AuthStore::new().encode(&mut empty);
    let body_len = image.len() - 4 - empty.len();
    let mut old = image[..body_len].to_vec();
    let crc = crc32fast_hash(&old);
    old.extend_from_slice(&crc.to_le_bytes());
    let restored = StateMachine::restore(&old, u64::MAX, 1).expect("old image");
    assert_eq!(restored.auth, AuthStore::new());
    assert_eq!(restored.kv.store.revision(), m.sm.kv.store.revision());
}

/// CRC-32 (IEEE), as the node image uses.
fn crc32fast_hash(b: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ---- The range union against a brute-force model ----

/// Every key over the alphabet {0, 1, 2} up to length 4: intervals' gaps start at an
/// endpoint (at most 3 bytes, or a 3-byte key with "\0" appended), so checking these
/// keys decides coverage exactly.
fn universe() -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    let mut level = vec![Vec::new()];
    for _ in 0..4 {
        let mut next = Vec::new();
        for k in &level {
            for c in 0..3u8 {
                let mut k2: Vec<u8> = k.clone();
                k2.push(c);
                next.push(k2);
            }
        }
        out.extend(next.iter().cloned());
        level = next;
    }
    out
}

/// Does the range (etcd conventions) hold key `k`?
fn holds(key: &[u8], range_end: &[u8], k: &[u8]) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == [0] {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

fn model(perms: &[Permission], key: &[u8], range_end: &[u8], need: PermKind) -> bool {
    let grants = |p: &Permission| p.kind == need || p.kind == PermKind::ReadWrite;
    let empty_request = !range_end.is_empty() && range_end != [0] && key >= range_end;
    universe()
        .iter()
        .filter(|k| {
            if empty_request {
                k[..] == *key
            } else {
                holds(key, range_end, k)
            }
        })
        .all(|k| {
            perms
                .iter()
                .any(|p| grants(p) && holds(&p.key, &p.range_end, k))
        })
}

fn small_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..4)
}

fn small_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        1 => Just(vec![0u8]),
        3 => small_key(),
    ]
}

fn small_perm() -> impl Strategy<Value = Permission> {
    let kind = prop_oneof![
        Just(PermKind::Read),
        Just(PermKind::Write),
        Just(PermKind::ReadWrite)
    ];
    (kind, small_key(), small_end()).prop_map(|(kind, key, end)| Permission {
        kind,
        key: Bytes::from(key),
        range_end: Bytes::from(end),
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn range_union_matches_brute_force(
        perms in prop::collection::vec(small_perm(), 0..6),
        key in small_key(),
        end in small_end(),
        write in any::<bool>(),
    ) {
        let need = if write { PermKind::Write } else { PermKind::Read };
        prop_assert_eq!(covers(&perms, &key, &end, need), model(&perms, &key, &end, need));
        // Through the store: the same answer for a user holding these permissions.
        let mut sorted: Vec<Permission> = Vec::new();
        for p in &perms {
            match sorted.iter_mut().find(|q| q.key == p.key && q.range_end == p.range_end) {
                Some(q) => q.kind = p.kind,
                None => sorted.push(p.clone()),
            }
        }
        let a = enabled_store(&perms);
        let u = who(&a, "u");
        prop_assert_eq!(
            a.check(Some(&u), &key, &end, need).is_ok(),
            model(&sorted, &key, &end, need)
        );
    }
}
