//! One integer register with read, write and compare-and-set: the model of the
//! jepsen-etcd corpus (Jepsen's `cas-register`).

use crate::linearizability::{Model, Successors};

/// A single register holding an integer or nothing; one partition.
#[derive(Clone, Copy, Debug, Default)]
pub struct CasRegister;

/// A register operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterInput {
    /// Read the value.
    Read,
    /// Overwrite the value.
    Write(i64),
    /// Set to `new` if the value is `expect`.
    Cas {
        /// The value required.
        expect: i64,
        /// The value installed.
        new: i64,
    },
}

/// A register response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterOutput {
    /// What a read saw; `None` is the register never written.
    Read(Option<i64>),
    /// A write was applied.
    Written,
    /// Whether a compare-and-set found its expected value (and so applied).
    Cas {
        /// The comparison held and the new value was installed.
        succeeded: bool,
    },
}

impl Model for CasRegister {
    type State = Option<i64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;
    type Key = ();

    fn partition(&self, _input: &RegisterInput) {}

    fn init(&self, _key: &()) -> Option<i64> {
        None
    }

    fn step(
        &self,
        state: &Option<i64>,
        input: &RegisterInput,
        output: Option<&RegisterOutput>,
    ) -> Successors<Option<i64>> {
        match (*input, output) {
            (RegisterInput::Read, None) => Successors::one(*state),
            (RegisterInput::Read, Some(&RegisterOutput::Read(seen))) => {
                Successors::when(seen == *state, || *state)
            }
            (RegisterInput::Write(value), None | Some(RegisterOutput::Written)) => {
                Successors::one(Some(value))
            }
            (RegisterInput::Cas { expect, new }, None) => {
                let matches = *state == Some(expect);
                Successors::one(if matches { Some(new) } else { *state })
            }
            (RegisterInput::Cas { expect, new }, Some(&RegisterOutput::Cas { succeeded })) => {
                let matches = *state == Some(expect);
                Successors::when(matches == succeeded, || {
                    if matches {
                        Some(new)
                    } else {
                        *state
                    }
                })
            }
            // A response of the wrong kind can never be explained.
            (_, Some(_)) => Successors::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{check, History, Verdict};

    type RegisterHistory = History<RegisterInput, RegisterOutput>;

    fn op(
        h: &mut RegisterHistory,
        client: u64,
        input: RegisterInput,
        span: (u64, u64),
        output: RegisterOutput,
    ) {
        h.push_returned(client, input, span.0, output, span.1)
            .expect("test spans are ordered");
    }

    fn verdict(h: &RegisterHistory) -> Verdict {
        check(&CasRegister, h).verdict()
    }

    use RegisterInput::{Cas, Read, Write};
    use RegisterOutput as Out;

    #[test]
    fn concurrent_writes_may_be_read_in_either_order() {
        for seen in [1, 2] {
            let mut h = RegisterHistory::new();
            op(&mut h, 1, Write(1), (0, 10), Out::Written);
            op(&mut h, 2, Write(2), (1, 11), Out::Written);
            op(&mut h, 3, Read, (12, 13), Out::Read(Some(seen)));
            assert_eq!(verdict(&h), Verdict::Linearizable, "read saw {seen}");
        }
        // Both concurrent writes done, a value neither wrote is impossible.
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 10), Out::Written);
        op(&mut h, 2, Write(2), (1, 11), Out::Written);
        op(&mut h, 3, Read, (12, 13), Out::Read(None));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn two_readers_cannot_disagree_on_the_order_of_settled_writes() {
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 10), Out::Written);
        op(&mut h, 2, Write(2), (1, 11), Out::Written);
        op(&mut h, 3, Read, (12, 13), Out::Read(Some(1)));
        op(&mut h, 4, Read, (14, 15), Out::Read(Some(2)));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn stale_read_after_completed_write_is_not_linearizable() {
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        op(&mut h, 1, Write(2), (2, 3), Out::Written);
        op(&mut h, 2, Read, (4, 5), Out::Read(Some(1)));
        let outcome = check(&CasRegister, &h);
        let explanation = outcome.explain(&h);
        let CheckOutcome::NotLinearizable(violation) = &outcome else {
            panic!("expected a violation: {explanation}");
        };
        // Both writes place; the read, which returns before anything else could
        // intervene, cannot.
        assert_eq!(violation.longest_prefix, [0, 1]);
        assert_eq!(violation.state_after_prefix, Some(2));
        assert_eq!(violation.stuck, 2);
        assert!(
            explanation.contains("#2 client 2: Read -> Read(Some(1)) [4, 5]"),
            "{explanation}"
        );

        // The same read overlapping the second write is fine.
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        op(&mut h, 1, Write(2), (2, 5), Out::Written);
        op(&mut h, 2, Read, (4, 6), Out::Read(Some(1)));
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 5), Out::Written);
        op(&mut h, 2, Read, (5, 6), Out::Read(None));
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 5), Out::Written);
        op(&mut h, 2, Read, (6, 7), Out::Read(None));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_write_may_be_seen_later() {
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        h.push_unknown(2, Write(7), 2);
        op(&mut h, 3, Read, (3, 4), Out::Read(Some(1)));
        // Long after the client gave up, the write shows up...
        op(&mut h, 3, Read, (100, 101), Out::Read(Some(7)));
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // ...but once seen, it cannot un-happen without another write.
        op(&mut h, 3, Read, (102, 103), Out::Read(Some(1)));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_write_may_never_be_seen() {
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        h.push_unknown(2, Write(7), 2);
        op(&mut h, 3, Read, (3, 4), Out::Read(Some(1)));
        op(&mut h, 3, Read, (100, 101), Out::Read(Some(1)));
        let outcome = check(&CasRegister, &h);
        let CheckOutcome::Linearizable { witness } = &outcome else {
            panic!("{}", outcome.explain(&h));
        };
        // The witness leaves the unknown write out entirely.
        assert_eq!(witness, &vec![((), vec![0, 2, 3])]);
    }

    #[test]
    fn unknown_write_cannot_take_effect_before_its_call() {
        let mut h = RegisterHistory::new();
        op(&mut h, 3, Read, (0, 1), Out::Read(Some(7)));
        h.push_unknown(2, Write(7), 2);
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn cas_success_and_failure() {
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        op(
            &mut h,
            2,
            Cas { expect: 1, new: 2 },
            (2, 3),
            Out::Cas { succeeded: true },
        );
        op(
            &mut h,
            3,
            Cas { expect: 1, new: 3 },
            (4, 5),
            Out::Cas { succeeded: false },
        );
        op(&mut h, 1, Read, (6, 7), Out::Read(Some(2)));
        assert_eq!(verdict(&h), Verdict::Linearizable);

        // A cas that claims success on a value that cannot be there.
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        op(
            &mut h,
            2,
            Cas { expect: 5, new: 2 },
            (2, 3),
            Out::Cas { succeeded: true },
        );
        assert_eq!(verdict(&h), Verdict::NotLinearizable);

        // A cas that claims failure although its expected value was certainly there.
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        op(
            &mut h,
            2,
            Cas { expect: 1, new: 2 },
            (2, 3),
            Out::Cas { succeeded: false },
        );
        assert_eq!(verdict(&h), Verdict::NotLinearizable);

        // Two concurrent cas from the same value: only one may win.
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        op(
            &mut h,
            2,
            Cas { expect: 1, new: 2 },
            (2, 5),
            Out::Cas { succeeded: true },
        );
        op(
            &mut h,
            3,
            Cas { expect: 1, new: 3 },
            (2, 5),
            Out::Cas { succeeded: true },
        );
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_cas_applies_only_if_it_matches() {
        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        h.push_unknown(2, Cas { expect: 1, new: 2 }, 2);
        op(&mut h, 3, Read, (10, 11), Out::Read(Some(2)));
        assert_eq!(verdict(&h), Verdict::Linearizable);

        let mut h = RegisterHistory::new();
        op(&mut h, 1, Write(1), (0, 1), Out::Written);
        h.push_unknown(2, Cas { expect: 9, new: 2 }, 2);
        op(&mut h, 3, Read, (10, 11), Out::Read(Some(2)));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn exhausted_budget_is_unknown_not_a_verdict() {
        let mut h = RegisterHistory::new();
        for client in 0..8 {
            op(&mut h, client, Write(client as i64), (0, 100), Out::Written);
        }
        op(&mut h, 9, Read, (101, 102), Out::Read(Some(42)));
        let tight = crate::linearizability::CheckOptions { max_steps: 5 };
        let outcome = crate::linearizability::check_with(&CasRegister, &h, &tight);
        assert_eq!(outcome.verdict(), Verdict::Unknown);
        assert!(outcome.explain(&h).starts_with("unknown"));
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    use crate::linearizability::CheckOutcome;
}
