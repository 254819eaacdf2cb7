//! quick smoke
use keel_core::raft::testkit::{id, Cluster};
use keel_core::raft::Role;

#[test]
fn smoke() {
    for n in [1, 3, 5] {
        let mut c = Cluster::new(n);
        c.opts.trace = true; let l = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.elect_any())); if l.is_err() { for t in &c.trace { eprintln!("{t}"); } panic!(); } let l = l.unwrap();
        for _ in 0..20 {
            c.propose(l).unwrap();
        }
        assert!(c.converge(1000), "{}", c.describe());
        c.check_converged();
        c.check_log_matching();
        assert_eq!(c.node(l).role(), Role::Leader);
        let _ = id(1);
        eprintln!("{}", c.describe());
    }
}
