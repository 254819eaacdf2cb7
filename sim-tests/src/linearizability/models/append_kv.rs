//! String registers under independent keys with get, put and append: the model of the
//! kv corpus.

use crate::linearizability::{Model, Successors};

/// A map from string keys to string values, missing keys reading as ""; partitioned by
/// key.
#[derive(Clone, Copy, Debug, Default)]
pub struct AppendKv;

/// An operation on one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendKvInput {
    /// Read the key's value.
    Get {
        /// The key.
        key: String,
    },
    /// Replace the key's value.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Concatenate to the key's value.
    Append {
        /// The key.
        key: String,
        /// What to add at the end.
        value: String,
    },
}

impl AppendKvInput {
    /// The key this operation touches.
    pub fn key(&self) -> &str {
        match self {
            AppendKvInput::Get { key }
            | AppendKvInput::Put { key, .. }
            | AppendKvInput::Append { key, .. } => key,
        }
    }
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendKvOutput {
    /// The value a get saw ("" for a key never written).
    Value(String),
    /// A put or append was applied.
    Done,
}

impl Model for AppendKv {
    type State = String;
    type Input = AppendKvInput;
    type Output = AppendKvOutput;
    type Key = String;

    fn partition(&self, input: &AppendKvInput) -> String {
        input.key().to_owned()
    }

    fn init(&self, _key: &String) -> String {
        String::new()
    }

    fn step(
        &self,
        state: &String,
        input: &AppendKvInput,
        output: Option<&AppendKvOutput>,
    ) -> Successors<String> {
        match (input, output) {
            (AppendKvInput::Get { .. }, None) => Successors::one(state.clone()),
            (AppendKvInput::Get { .. }, Some(AppendKvOutput::Value(seen))) => {
                Successors::when(seen == state, || state.clone())
            }
            (AppendKvInput::Put { value, .. }, None | Some(AppendKvOutput::Done)) => {
                Successors::one(value.clone())
            }
            (AppendKvInput::Append { value, .. }, None | Some(AppendKvOutput::Done)) => {
                let mut next = String::with_capacity(state.len() + value.len());
                next.push_str(state);
                next.push_str(value);
                Successors::one(next)
            }
            (_, Some(_)) => Successors::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::{check, CheckOutcome, History, Verdict};

    type KvHistory = History<AppendKvInput, AppendKvOutput>;

    fn get(key: &str) -> AppendKvInput {
        AppendKvInput::Get { key: key.into() }
    }
    fn append(key: &str, value: &str) -> AppendKvInput {
        AppendKvInput::Append {
            key: key.into(),
            value: value.into(),
        }
    }
    fn seen(value: &str) -> AppendKvOutput {
        AppendKvOutput::Value(value.into())
    }

    #[test]
    fn appends_compose_in_linearization_order() {
        let mut h = KvHistory::new();
        h.push_returned(1, append("k", "a"), 0, AppendKvOutput::Done, 10)
            .expect("ordered");
        h.push_returned(2, append("k", "b"), 1, AppendKvOutput::Done, 11)
            .expect("ordered");
        h.push_returned(3, get("k"), 12, seen("ba"), 13)
            .expect("ordered");
        assert_eq!(check(&AppendKv, &h).verdict(), Verdict::Linearizable);
        h.push_returned(3, get("k"), 14, seen("ab"), 15)
            .expect("ordered");
        assert_eq!(check(&AppendKv, &h).verdict(), Verdict::NotLinearizable);
    }

    #[test]
    fn partitions_are_checked_independently() {
        // Key "x" on its own is fine; key "y" has a stale read. Interleaving them in time
        // must neither hide y's violation nor blame x.
        let mut h = KvHistory::new();
        h.push_returned(1, append("x", "1"), 0, AppendKvOutput::Done, 3)
            .expect("ordered");
        h.push_returned(2, append("y", "1"), 1, AppendKvOutput::Done, 2)
            .expect("ordered");
        h.push_returned(1, get("x"), 4, seen("1"), 5)
            .expect("ordered");
        h.push_returned(2, get("y"), 4, seen(""), 5)
            .expect("ordered");
        let outcome = check(&AppendKv, &h);
        let CheckOutcome::NotLinearizable(violation) = &outcome else {
            panic!("expected a violation: {}", outcome.explain(&h));
        };
        assert_eq!(violation.key, "y");
        assert_eq!(violation.partition_len, 2);
        assert_eq!(violation.stuck, 3);

        // A read of "x" that would be fine if keys were one register ("1" then "11"
        // requires two appends on the same key) is not fine per key.
        let mut h = KvHistory::new();
        h.push_returned(1, append("x", "1"), 0, AppendKvOutput::Done, 1)
            .expect("ordered");
        h.push_returned(2, append("y", "1"), 2, AppendKvOutput::Done, 3)
            .expect("ordered");
        h.push_returned(1, get("x"), 4, seen("11"), 5)
            .expect("ordered");
        assert_eq!(check(&AppendKv, &h).verdict(), Verdict::NotLinearizable);

        // Disjoint keys each linearizable: the witness has one order per key.
        let mut h = KvHistory::new();
        h.push_returned(1, append("x", "1"), 0, AppendKvOutput::Done, 1)
            .expect("ordered");
        h.push_returned(2, append("y", "2"), 0, AppendKvOutput::Done, 1)
            .expect("ordered");
        h.push_returned(1, get("y"), 2, seen("2"), 3)
            .expect("ordered");
        let outcome = check(&AppendKv, &h);
        let CheckOutcome::Linearizable { witness } = outcome else {
            panic!("expected linearizable");
        };
        assert_eq!(
            witness,
            vec![("x".to_owned(), vec![0]), ("y".to_owned(), vec![1, 2])]
        );
    }

    #[test]
    fn put_replaces_and_unknown_put_may_or_may_not_land() {
        let mut h = KvHistory::new();
        h.push_returned(1, append("k", "a"), 0, AppendKvOutput::Done, 1)
            .expect("ordered");
        h.push_unknown(
            2,
            AppendKvInput::Put {
                key: "k".into(),
                value: "p".into(),
            },
            2,
        );
        h.push_returned(3, append("k", "b"), 3, AppendKvOutput::Done, 4)
            .expect("ordered");
        for (read, expected) in [
            ("ab", Verdict::Linearizable),
            ("pb", Verdict::Linearizable),
            ("abp", Verdict::NotLinearizable),
        ] {
            let mut with_read = h.clone();
            with_read
                .push_returned(4, get("k"), 5, seen(read), 6)
                .expect("ordered");
            assert_eq!(check(&AppendKv, &with_read).verdict(), expected, "{read}");
        }
        // "p" alone: the unknown put landed after the append completed. Allowed.
        let mut late = h.clone();
        late.push_returned(4, get("k"), 5, seen("p"), 6)
            .expect("ordered");
        assert_eq!(check(&AppendKv, &late).verdict(), Verdict::Linearizable);
    }
}
