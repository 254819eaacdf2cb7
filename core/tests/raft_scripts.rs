//! Data-driven raft scenarios, in the style of etcd-io/raft's `testdata/*.txt`.
//!
//! Each file in `tests/scripts/` is a sequence of blocks: commands, a `----` line, and the
//! output those commands must print. Run with `KEEL_REWRITE=1` to regenerate the expected
//! outputs after an intended change, then review the diff.
//!
//! Commands (member numbers are IDs; the cluster's invariant checks run throughout):
//!   cluster voters=N [learners=M]   fresh cluster
//!   campaign N                      N starts an election now
//!   stabilize                       deliver messages until none are in flight
//!   tick MS                         advance MS milliseconds, delivering as time passes
//!   propose N [count=K]             propose K payloads at N; prints errors
//!   read N                          linearizable read at N (result printed by `reads N`)
//!   reads N                         confirmed reads at N
//!   isolate N | heal | partition A,B C,D | cut A B (one way)
//!   crash N | restart N | compact N
//!   transfer N TO
//!   add-voter N | add-learner N | remove N   (proposed at the current leader)
//!   add-member N                    start a blank member N that knows no configuration
//!   status                          one line per member
//!   applied                         applied payload count per member

use std::fmt::Write as _;
use std::path::Path;

use keel_core::raft::testkit::{Cluster, ClusterOptions};
use keel_core::raft::{ConfChange, MemberId, Role};

fn ids(s: &str) -> Vec<MemberId> {
    s.split(',')
        .filter_map(|x| x.trim().parse().ok())
        .map(MemberId)
        .collect()
}

fn arg<'a>(args: &'a [&str], i: usize, line: &str) -> &'a str {
    args.get(i)
        .copied()
        .unwrap_or_else(|| panic!("missing argument {i} in `{line}`"))
}

fn num(s: &str, line: &str) -> u64 {
    s.parse()
        .unwrap_or_else(|_| panic!("not a number: `{s}` in `{line}`"))
}

fn status(c: &Cluster) -> String {
    let mut out = String::new();
    for (id, m) in &c.members {
        match &m.node {
            None => {
                let _ = writeln!(out, "{id:?}: down");
            }
            Some(n) => {
                let role = match n.role() {
                    Role::Leader => "leader",
                    Role::Follower => "follower",
                    Role::Candidate => "candidate",
                    Role::PreCandidate => "pre-candidate",
                };
                let kind = if n.is_removed() {
                    " (removed)"
                } else if n.conf().learners.contains(id) {
                    " (learner)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "{id:?}: {role}{kind} term={:?} leader={:?} last={:?} commit={:?} applied={:?}",
                    n.term(),
                    n.leader(),
                    n.last_index(),
                    n.committed(),
                    m.sm.applied
                );
            }
        }
    }
    out
}

fn run_command(c: &mut Option<Cluster>, line: &str, out: &mut String) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let Some(&cmd) = args.first() else { return };
    if cmd == "cluster" {
        let mut voters = 3;
        let mut learners = 0;
        for a in &args[1..] {
            if let Some(v) = a.strip_prefix("voters=") {
                voters = num(v, line);
            } else if let Some(v) = a.strip_prefix("learners=") {
                learners = num(v, line);
            }
        }
        *c = Some(Cluster::with(
            voters,
            learners,
            ClusterOptions::default(),
            |_| {},
        ));
        let _ = writeln!(out, "ok");
        return;
    }
    let c = c
        .as_mut()
        .unwrap_or_else(|| panic!("`{line}` before `cluster`"));
    let member = |i: usize| MemberId(num(arg(&args, i, line), line));
    match cmd {
        "campaign" => c.campaign(member(1)),
        "stabilize" => {
            c.stabilize();
        }
        "tick" => c.advance(num(arg(&args, 1, line), line)),
        "propose" => {
            let count = args
                .get(2)
                .and_then(|a| a.strip_prefix("count="))
                .map_or(1, |v| num(v, line));
            for _ in 0..count {
                if let Err(e) = c.propose(member(1)) {
                    let _ = writeln!(out, "error: {e}");
                    break;
                }
            }
        }
        "read" => {
            if let Err(e) = c.read(member(1)) {
                let _ = writeln!(out, "error: {e}");
            }
        }
        "reads" => {
            let reads = c.reads(member(1));
            let line: Vec<String> = reads
                .iter()
                .map(|r| format!("ctx={:?}@{:?}", r.ctx, r.index))
                .collect();
            let _ = writeln!(
                out,
                "{}",
                if line.is_empty() {
                    "none".into()
                } else {
                    line.join(" ")
                }
            );
        }
        "isolate" => c.isolate(member(1)),
        "heal" => c.heal(),
        "partition" => c.partition(&ids(arg(&args, 1, line)), &ids(arg(&args, 2, line))),
        "cut" => c.cut_one_way(member(1), member(2)),
        "crash" => c.crash(member(1), 0),
        "restart" => c.restart(member(1)),
        "compact" => c.compact(member(1)),
        "transfer" => {
            if let Err(e) = c.transfer(member(1), member(2)) {
                let _ = writeln!(out, "error: {e}");
            }
        }
        "add-voter" | "add-learner" | "remove" => {
            let target = member(1);
            let cc = match cmd {
                "add-voter" => ConfChange::AddVoter(target),
                "add-learner" => ConfChange::AddLearner(target),
                _ => ConfChange::Remove(target),
            };
            match c.leader() {
                None => {
                    let _ = writeln!(out, "error: no leader");
                }
                Some(l) => {
                    if let Err(e) = c.conf_change(l, cc) {
                        let _ = writeln!(out, "error: {e}");
                    }
                }
            }
        }
        "add-member" => c.add_blank_member(member(1)),
        "status" => out.push_str(&status(c)),
        "applied" => {
            for (id, m) in &c.members {
                let _ = writeln!(out, "{id:?}: {} payloads", m.sm.payloads.len());
            }
        }
        other => panic!("unknown command `{other}` in `{line}`"),
    }
}

/// Runs one script; returns the file with actual outputs in place of expected ones.
fn run_script(text: &str) -> (String, Vec<String>) {
    let mut cluster = None;
    let mut rewritten = String::new();
    let mut mismatches = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            continue;
        }
        // A block: commands up to `----`, then expected output up to a blank line.
        let mut commands = vec![line.to_string()];
        for l in lines.by_ref() {
            if l.trim() == "----" {
                break;
            }
            commands.push(l.to_string());
        }
        let mut expected = String::new();
        while let Some(l) = lines.peek() {
            if l.trim().is_empty() {
                break;
            }
            expected.push_str(l);
            expected.push('\n');
            lines.next();
        }
        let mut actual = String::new();
        for cmd in &commands {
            run_command(&mut cluster, cmd.trim(), &mut actual);
        }
        if actual.is_empty() {
            actual.push_str("ok\n");
        }
        if let Some(c) = &cluster {
            c.check_log_matching();
        }
        if actual != expected {
            mismatches.push(format!(
                "after:\n{}\nexpected:\n{expected}actual:\n{actual}",
                commands.join("\n")
            ));
        }
        for cmd in &commands {
            rewritten.push_str(cmd);
            rewritten.push('\n');
        }
        rewritten.push_str("----\n");
        rewritten.push_str(&actual);
    }
    (rewritten, mismatches)
}

#[test]
fn scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/scripts exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no scripts in {}", dir.display());
    let rewrite = std::env::var_os("KEEL_REWRITE").is_some();
    let mut failures = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable script");
        let (rewritten, mismatches) = run_script(&text);
        if rewrite {
            std::fs::write(f, rewritten).expect("rewrite script");
        } else {
            for m in mismatches {
                failures.push(format!("{}:\n{m}", f.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
