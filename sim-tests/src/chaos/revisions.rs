//! Revisions agree with real time: an operation called after another returned never
//! sees an older revision in its response header. The per-key model cannot see this
//! across keys; this check covers the whole history.

use crate::linearizability::models::etcd_kv::KvOutput;
use crate::linearizability::{Completion, History};

fn header_revision<V>(out: &KvOutput<V>) -> u64 {
    match out {
        KvOutput::Get { revision, .. }
        | KvOutput::Put { revision }
        | KvOutput::Delete { revision, .. }
        | KvOutput::Txn { revision, .. } => *revision,
    }
}

/// The first pair of operations whose revisions go backwards in real time, described.
pub fn check_revisions_follow_real_time<I: std::fmt::Debug, V: std::fmt::Debug>(
    history: &History<I, KvOutput<V>>,
) -> Result<(), String> {
    let done: Vec<(u64, u64, u64, usize)> = history
        .ops()
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match &op.completion {
            Completion::Returned { at, output } => Some((op.call, *at, header_revision(output), i)),
            Completion::Unknown => None,
        })
        .collect();
    let mut by_return = done.clone();
    by_return.sort_by_key(|d| d.1);
    let mut by_call = done;
    by_call.sort_by_key(|d| d.0);
    let mut next = 0;
    let mut max: Option<(u64, usize)> = None;
    for (call, _, revision, i) in by_call {
        while next < by_return.len() && by_return[next].1 < call {
            let (_, _, r, j) = by_return[next];
            if max.is_none_or(|(m, _)| r > m) {
                max = Some((r, j));
            }
            next += 1;
        }
        if let Some((m, j)) = max {
            if revision < m {
                let ops = history.ops();
                return Err(format!(
                    "revision went backwards: {:?} returned {:?} (revision {m}), then {:?} \
                     called later got revision {revision}",
                    ops[j].input,
                    ops[j].output(),
                    ops[i].input
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::Operation;

    fn op(call: u64, ret: u64, revision: u64) -> Operation<u8, KvOutput<u8>> {
        Operation {
            client: 0,
            input: 0,
            call,
            completion: Completion::Returned {
                at: ret,
                output: KvOutput::Put { revision },
            },
        }
    }

    #[test]
    fn only_real_time_order_constrains_revisions() {
        let mut h = History::new();
        h.push(op(0, 10, 5)).ok();
        h.push(op(5, 20, 4)).ok(); // concurrent with the first: may be older
        h.push(op(11, 30, 5)).ok();
        assert_eq!(check_revisions_follow_real_time(&h), Ok(()));
        h.push(op(31, 40, 4)).ok();
        assert!(check_revisions_follow_real_time(&h).is_err());
    }
}
