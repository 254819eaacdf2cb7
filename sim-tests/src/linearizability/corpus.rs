//! Parsers for the validation corpus (Porcupine's test data): Jepsen etcd logs for the
//! single register, and EDN-like lines for the multi-key append store. Both become
//! histories through a [`Recorder`], with the line number as the time of each event.

use std::collections::HashMap;

use thiserror::Error;

use super::history::{CallId, History, HistoryError, Recorder, Time};
use super::models::{AppendKvInput, AppendKvOutput, RegisterInput, RegisterOutput};

/// A corpus file that does not say what the parser expects.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// How an event ended an operation, or that it began one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

impl EventType {
    fn parse(word: &str, line: usize) -> Result<Self, ParseError> {
        match word {
            ":invoke" => Ok(EventType::Invoke),
            ":ok" => Ok(EventType::Ok),
            ":fail" => Ok(EventType::Fail),
            ":info" => Ok(EventType::Info),
            other => Err(error(line, format!("unknown event type {other:?}"))),
        }
    }
}

/// Tracks each process's open call, as Jepsen's one-call-at-a-time processes have.
struct Processes<I, O> {
    recorder: Recorder<I, O>,
    open: HashMap<u64, CallId>,
}

impl<I, O> Processes<I, O> {
    fn new() -> Self {
        Self {
            recorder: Recorder::new(),
            open: HashMap::new(),
        }
    }

    fn invoke(&mut self, process: u64, input: I, at: Time, line: usize) -> Result<(), ParseError> {
        if self.open.contains_key(&process) {
            return Err(error(
                line,
                format!("process {process} invokes while its previous call is open"),
            ));
        }
        let call = self.recorder.invoke(process, input, at);
        self.open.insert(process, call);
        Ok(())
    }

    fn open_call(&mut self, process: u64, line: usize) -> Result<CallId, ParseError> {
        self.open.remove(&process).ok_or_else(|| {
            error(
                line,
                format!("process {process} completes with no open call"),
            )
        })
    }

    fn complete(
        &mut self,
        process: u64,
        event: EventType,
        output: impl FnOnce() -> Result<O, ParseError>,
        at: Time,
        line: usize,
    ) -> Result<(), ParseError> {
        let call = self.open_call(process, line)?;
        let recorded = match event {
            EventType::Ok => self.recorder.ok(call, output()?, at),
            EventType::Fail => self.recorder.fail(call),
            EventType::Info => self.recorder.info(call),
            EventType::Invoke => return Err(error(line, "an invoke does not complete a call")),
        };
        recorded.map_err(|e: HistoryError| error(line, e.to_string()))
    }

    // Calls never completed count as unknown: Jepsen's `info` processes never return.
    fn finish(self) -> History<I, O> {
        self.recorder.finish()
    }
}

/// Parses a Jepsen etcd log (`INFO  jepsen.util - <process> :<type> :<f> <value>`) into a
/// single-register history. Lines without `jepsen.util -` are ignored.
///
/// `:fail` means the operation definitely did not take effect and drops it; for a
/// compare-and-set that is Jepsen's verdict "the comparison failed", so a failed cas also
/// leaves the history (knossos, Jepsen's own checker, does the same).
pub fn parse_jepsen_register_log(
    text: &str,
) -> Result<History<RegisterInput, RegisterOutput>, ParseError> {
    const MARKER: &str = "jepsen.util - ";
    let mut processes = Processes::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let Some(start) = raw.find(MARKER) else {
            continue;
        };
        let mut words = raw[start + MARKER.len()..].split_whitespace();
        let mut next = |what: &str| {
            words
                .next()
                .ok_or_else(|| error(line, format!("missing {what}")))
        };
        let process: u64 = next("process")?
            .parse()
            .map_err(|_| error(line, "process is not a number"))?;
        let event = EventType::parse(next("event type")?, line)?;
        let f = next("operation")?;
        let value: Vec<&str> = words.collect();
        let at = line as Time;
        match event {
            EventType::Invoke => {
                let input = match f {
                    ":read" => RegisterInput::Read,
                    ":write" => RegisterInput::Write(parse_int(&value, line)?),
                    ":cas" => {
                        let (expect, new) = parse_pair(&value, line)?;
                        RegisterInput::Cas { expect, new }
                    }
                    other => return Err(error(line, format!("unknown operation {other}"))),
                };
                processes.invoke(process, input, at, line)?;
            }
            completion => {
                let output = || match f {
                    ":read" => Ok(RegisterOutput::Read(parse_nil_or_int(&value, line)?)),
                    ":write" => Ok(RegisterOutput::Written),
                    ":cas" => Ok(RegisterOutput::Cas { succeeded: true }),
                    other => Err(error(line, format!("unknown operation {other}"))),
                };
                processes.complete(process, completion, output, at, line)?;
            }
        }
    }
    Ok(processes.finish())
}

fn parse_int(words: &[&str], line: usize) -> Result<i64, ParseError> {
    match words {
        [word] => word
            .parse()
            .map_err(|_| error(line, format!("{word:?} is not an integer"))),
        _ => Err(error(
            line,
            format!("expected one integer, found {words:?}"),
        )),
    }
}

fn parse_nil_or_int(words: &[&str], line: usize) -> Result<Option<i64>, ParseError> {
    match words {
        ["nil"] => Ok(None),
        _ => parse_int(words, line).map(Some),
    }
}

fn parse_pair(words: &[&str], line: usize) -> Result<(i64, i64), ParseError> {
    let joined = words.join(" ");
    let inner = joined
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(|| error(line, format!("expected [old new], found {joined:?}")))?;
    let parts: Vec<&str> = inner.split_whitespace().collect();
    match parts.as_slice() {
        [old, new] => Ok((parse_int(&[old], line)?, parse_int(&[new], line)?)),
        _ => Err(error(line, format!("expected [old new], found {joined:?}"))),
    }
}

/// A value in the EDN subset the kv corpus uses.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Edn {
    Nil,
    Int(i64),
    Keyword(String),
    Str(String),
}

/// Parses one `{:k v, :k v}` map of scalars.
fn parse_edn_map(text: &str, line: usize) -> Result<Vec<(String, Edn)>, ParseError> {
    let body = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| error(line, "expected a {...} map"))?;
    let mut chars = body.chars().peekable();
    let mut scalars = Vec::new();
    loop {
        // Commas are whitespace in EDN.
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let Some(c) = chars.next() else { break };
        let scalar = match c {
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(escaped @ ('"' | '\\')) => s.push(escaped),
                            other => {
                                return Err(error(line, format!("bad string escape {other:?}")))
                            }
                        },
                        Some(other) => s.push(other),
                        None => return Err(error(line, "unterminated string")),
                    }
                }
                Edn::Str(s)
            }
            _ => {
                let mut word = String::from(c);
                while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != ',') {
                    word.push(c);
                }
                if let Some(name) = word.strip_prefix(':') {
                    Edn::Keyword(name.to_owned())
                } else if word == "nil" {
                    Edn::Nil
                } else {
                    Edn::Int(
                        word.parse()
                            .map_err(|_| error(line, format!("unexpected token {word:?}")))?,
                    )
                }
            }
        };
        scalars.push(scalar);
    }
    if scalars.len() % 2 != 0 {
        return Err(error(line, "map has a key without a value"));
    }
    let mut pairs = Vec::with_capacity(scalars.len() / 2);
    let mut iter = scalars.into_iter();
    while let (Some(key), Some(value)) = (iter.next(), iter.next()) {
        match key {
            Edn::Keyword(name) => pairs.push((name, value)),
            other => return Err(error(line, format!("map key {other:?} is not a keyword"))),
        }
    }
    Ok(pairs)
}

/// Parses the kv corpus format, one `{:process P, :type :T, :f :F, :key "k", :value V}`
/// map per line, into a multi-key history. Blank lines are ignored.
pub fn parse_kv_log(text: &str) -> Result<History<AppendKvInput, AppendKvOutput>, ParseError> {
    let mut processes = Processes::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let fields = parse_edn_map(raw, line)?;
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value)
                .ok_or_else(|| error(line, format!("missing :{name}")))
        };
        let process = match field("process")? {
            Edn::Int(p) if *p >= 0 => *p as u64,
            other => return Err(error(line, format!(":process {other:?} is not a process"))),
        };
        let event = match field("type")? {
            Edn::Keyword(word) => EventType::parse(&format!(":{word}"), line)?,
            other => return Err(error(line, format!(":type {other:?} is not a keyword"))),
        };
        let f = match field("f")? {
            Edn::Keyword(word) => word.as_str(),
            other => return Err(error(line, format!(":f {other:?} is not a keyword"))),
        };
        let key = match field("key")? {
            Edn::Str(key) => key.clone(),
            other => return Err(error(line, format!(":key {other:?} is not a string"))),
        };
        let value = field("value")?;
        let string_value = || match value {
            Edn::Str(s) => Ok(s.clone()),
            other => Err(error(line, format!(":value {other:?} is not a string"))),
        };
        let at = line as Time;
        match event {
            EventType::Invoke => {
                let input = match f {
                    "get" => AppendKvInput::Get { key },
                    "put" => AppendKvInput::Put {
                        key,
                        value: string_value()?,
                    },
                    "append" => AppendKvInput::Append {
                        key,
                        value: string_value()?,
                    },
                    other => return Err(error(line, format!("unknown operation :{other}"))),
                };
                processes.invoke(process, input, at, line)?;
            }
            completion => {
                let output = || match f {
                    "get" => string_value().map(AppendKvOutput::Value),
                    "put" | "append" => Ok(AppendKvOutput::Done),
                    other => Err(error(line, format!("unknown operation :{other}"))),
                };
                processes.complete(process, completion, output, at, line)?;
            }
        }
    }
    Ok(processes.finish())
}

/// A published verdict from a corpus `EXPECTED` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedVerdict {
    /// The history file name.
    pub file: String,
    /// Whether it is linearizable.
    pub linearizable: bool,
}

/// Parses `EXPECTED`: one `<file> linearizable|not-linearizable` per line; blank lines
/// and `#` comments are ignored.
pub fn parse_expected(text: &str) -> Result<Vec<ExpectedVerdict>, ParseError> {
    let mut verdicts = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let words: Vec<&str> = content.split_whitespace().collect();
        let linearizable = match words.as_slice() {
            [_, "linearizable"] => true,
            [_, "not-linearizable"] => false,
            _ => {
                return Err(error(
                    line,
                    format!("expected `<file> linearizable|not-linearizable`, found {content:?}"),
                ))
            }
        };
        verdicts.push(ExpectedVerdict {
            file: words[0].to_owned(),
            linearizable,
        });
    }
    Ok(verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linearizability::Completion;

    #[test]
    fn jepsen_lines_with_tabs_or_spaces_and_all_event_types() {
        let log = "\
noise before the history
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1   :invoke :write  3
INFO  jepsen.util - 2\t:invoke\t:cas\t[3 4]
INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]
INFO  jepsen.util - 4\t:invoke\t:write\t9
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1   :ok     :write  3
INFO  jepsen.util - 2\t:ok\t:cas\t[3 4]
INFO  jepsen.util - 3\t:fail\t:cas\t[1 2]
INFO  jepsen.util - 4\t:info\t:write\t:timed-out
";
        let history = parse_jepsen_register_log(log).expect("valid log");
        let ops = history.ops();
        assert_eq!(ops.len(), 4, "the failed cas is dropped");
        assert_eq!(ops[0].input, RegisterInput::Read);
        assert_eq!(
            ops[0].completion,
            Completion::Returned {
                at: 7,
                output: RegisterOutput::Read(None)
            }
        );
        assert_eq!(ops[1].input, RegisterInput::Write(3));
        assert_eq!(ops[1].call, 3);
        assert_eq!(ops[2].input, RegisterInput::Cas { expect: 3, new: 4 });
        assert_eq!(
            ops[2].output(),
            Some(&RegisterOutput::Cas { succeeded: true })
        );
        assert_eq!(ops[3].input, RegisterInput::Write(9));
        assert_eq!(ops[3].completion, Completion::Unknown);
    }

    #[test]
    fn jepsen_log_errors_name_the_line() {
        let err = parse_jepsen_register_log("INFO  jepsen.util - 0\t:ok\t:read\t1\n")
            .expect_err("no open call");
        assert_eq!(err.line, 1);
        let err = parse_jepsen_register_log("\nINFO  jepsen.util - 0\t:invoke\t:cas\t[1]\n")
            .expect_err("bad pair");
        assert_eq!(err.line, 2);
        assert!(err.to_string().starts_with("line 2: expected [old new]"));
    }

    #[test]
    fn kv_lines_parse_strings_nil_and_escapes() {
        let log = r#"{:process 0, :type :invoke, :f :append, :key "k", :value "x 0 0 y"}
{:process 1, :type :invoke, :f :get, :key "k", :value nil}
{:process 0, :type :ok, :f :append, :key "k", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "k", :value "a \"q\", b"}
{:process 2, :type :invoke, :f :put, :key "j", :value ""}
"#;
        let history = parse_kv_log(log).expect("valid log");
        let ops = history.ops();
        assert_eq!(
            ops[0].input,
            AppendKvInput::Append {
                key: "k".into(),
                value: "x 0 0 y".into()
            }
        );
        assert_eq!(
            ops[1].output(),
            Some(&AppendKvOutput::Value("a \"q\", b".into()))
        );
        assert_eq!(ops[1].returned_at(), Some(4));
        assert_eq!(ops[2].completion, Completion::Unknown);
        assert!(parse_kv_log("{:process 0, :type :invoke}").is_err());
        assert!(
            parse_kv_log("{:process 0, :type :invoke, :f :get, :key \"k\", :value nil").is_err()
        );
    }

    #[test]
    fn expected_file() {
        let verdicts =
            parse_expected("a.log linearizable\n# note\n\nb.log not-linearizable\n").expect("ok");
        assert_eq!(
            verdicts,
            vec![
                ExpectedVerdict {
                    file: "a.log".into(),
                    linearizable: true
                },
                ExpectedVerdict {
                    file: "b.log".into(),
                    linearizable: false
                }
            ]
        );
        assert!(parse_expected("a.log maybe\n").is_err());
    }
}
