//! The simulated clients' side of a member process: their requests become the member's
//! calls (a token resolved first, as the gRPC layer does), and its answers become
//! replies on madsim's network.

use super::*;

/// Who waits for a member's answer.
pub(super) enum Waiting {
    /// A client's write: answer `id` at `to`.
    Write { to: SocketAddr, id: u64 },
    /// A client's linearizable get.
    Read { to: SocketAddr, id: u64, key: Bytes },
    /// An operator's membership change.
    Change(ConfChange),
    /// A request whose simple token names an Authenticate entry not applied here yet.
    Token { from: SocketAddr, req: Request },
    /// A client's login.
    Login { to: SocketAddr, id: u64 },
    /// A client's auth store change.
    AuthChange { to: SocketAddr, id: u64 },
}

/// Where a watcher's responses go: the client and its watch request's ID (the tag).
pub(super) struct Sink {
    pub(super) to: SocketAddr,
    pub(super) tag: u64,
    pub(super) next_seq: u64,
    /// Opened with require-leader: ended when the member has long had no leader.
    pub(super) require_leader: bool,
    /// A client that reads slowly: it takes responses every few rounds only, so events
    /// wait in the member's hub (and fall back to history) as behind a slow gRPC stream.
    pub(super) slow: bool,
}

/// A slow stream takes responses on one round in this many.
const SLOW_STREAM_ROUNDS: u64 = 4;

impl Process {
    pub(super) fn call(&mut self, now: Time, waiting: Waiting, require_leader: bool) -> Call {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.waiting.insert(token, waiting);
        Call {
            token,
            deadline: now.plus(REQUEST_TIMEOUT_MS),
            require_leader,
        }
    }

    pub(super) fn client(&mut self, now: Time, from: SocketAddr, req: Request) {
        // The token first, as the gRPC layer resolves it before the call.
        let auth = match &req.token {
            None => None,
            Some(token) => match self.tokens.check(token, now) {
                // etcd reports a simple token's revision as the store's current one.
                TokenCheck::Valid(info) => Some(AuthInfo {
                    revision: u64::MAX,
                    ..info
                }),
                TokenCheck::WaitFor(index) if self.spec.bug != Some(Bug::TokenWithoutWait) => {
                    let w = Waiting::Token { from, req };
                    let call = self.call(now, w, false);
                    let wait = MemberRequest::WaitApplied { index };
                    return self.member.request(now, call, wait);
                }
                _ => {
                    let refused = ClientReply::Refused("etcdserver: invalid auth token".into());
                    return self.reply(from, req.id, refused);
                }
            },
        };
        self.serve(now, from, req, auth);
    }

    /// A client's request, its caller resolved.
    fn serve(&mut self, now: Time, from: SocketAddr, req: Request, auth: Option<AuthInfo>) {
        let cmd = match req.op {
            ClientOp::Authenticate { user } => {
                let token = format!("{:016x}", madsim::rand::random::<u64>());
                let cmd = Command::Auth(AuthCommand::Authenticate { name: user, token });
                let w = Waiting::Login {
                    to: from,
                    id: req.id,
                };
                let call = self.call(now, w, req.require_leader);
                let req = MemberRequest::Propose { cmd, auth: None };
                return self.member.request(now, call, req);
            }
            ClientOp::AuthChange(change) => {
                let w = Waiting::AuthChange {
                    to: from,
                    id: req.id,
                };
                let call = self.call(now, w, req.require_leader);
                let req = MemberRequest::Propose {
                    cmd: Command::Auth(change),
                    auth: Some(AuthInfo::member()),
                };
                return self.member.request(now, call, req);
            }
            ClientOp::Get { key } => {
                let w = Waiting::Read {
                    to: from,
                    id: req.id,
                    key,
                };
                let call = self.call(now, w, req.require_leader);
                return self.member.request(now, call, MemberRequest::Read);
            }
            ClientOp::Put { key, value, lease } => Command::Put(PutRequest {
                key,
                value,
                lease,
                ..Default::default()
            }),
            ClientOp::Delete { key } => Command::DeleteRange(DeleteRangeRequest {
                key,
                ..Default::default()
            }),
            ClientOp::Cas { key, expect, value } => Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Value(expect),
                    key: key.clone(),
                    range_end: Bytes::new(),
                }],
                success: vec![RequestOp::Put(PutRequest {
                    key,
                    value,
                    ..Default::default()
                })],
                failure: vec![],
            }),
            ClientOp::Compact { revision } => Command::Compact {
                revision,
                physical: false,
            },
            ClientOp::LeaseGrant { ttl } => Command::LeaseGrant {
                id: self.member.new_lease_id().0,
                ttl,
            },
            ClientOp::LeaseKeepAlive { id } => {
                // As runtime-tokio's keepalive: the local lessor renews if it is the
                // leader's (a follower there forwards to the leader; here the client
                // tries another member).
                let reply = match self.member.renew_lease(now, LeaseId(id)) {
                    Ok(ttl) => ClientReply::LeaseKeepAlive { ttl },
                    Err(LeaseError::NotFound) => ClientReply::LeaseKeepAlive { ttl: 0 },
                    Err(e) => ClientReply::Refused(e.to_string()),
                };
                return self.reply(from, req.id, reply);
            }
            ClientOp::Watch {
                key,
                range_end,
                start_revision,
                prev_kv,
            } => {
                // As the gRPC interceptor refuses a require-leader call.
                if req.require_leader && !self.member.raft.leader().is_some() {
                    let refused = ClientReply::Refused(MemberError::NoLeader.to_string());
                    return self.reply(from, req.id, refused);
                }
                let wreq = WatchRequest {
                    key,
                    range_end,
                    start_revision,
                    prev_kv,
                    ..Default::default()
                };
                let wid = self.member.watch_create(wreq);
                let sink = Sink {
                    to: from,
                    tag: req.id,
                    next_seq: 1,
                    require_leader: req.require_leader,
                    slow: madsim::rand::random::<bool>(),
                };
                self.sinks.insert(wid, sink);
                self.watch_by_tag.insert((from, req.id), wid);
                let revision = self.header_revision();
                return self.reply(from, req.id, ClientReply::WatchCreated { revision });
            }
            ClientOp::RequestProgress { id } => {
                if let Some(&wid) = self.watch_by_tag.get(&(from, id)) {
                    let ready = self.ready_sinks();
                    let out = self
                        .member
                        .watch_progress(ProgressFor::Stream(&[wid]), |id| ready.contains(&id));
                    self.send_watches(out, Some(wid));
                }
                return;
            }
            ClientOp::CancelWatch { id } => {
                if let Some(wid) = self.watch_by_tag.remove(&(from, id)) {
                    self.sinks.remove(&wid);
                    self.member.watch_cancel(wid);
                }
                return;
            }
        };
        let w = Waiting::Write {
            to: from,
            id: req.id,
        };
        let call = self.call(now, w, req.require_leader);
        let req = MemberRequest::Propose { cmd, auth };
        self.member.request(now, call, req);
    }

    pub(super) fn answer(&mut self, token: Token, r: Result<Response, MemberError>) {
        let Some(w) = self.waiting.remove(&token) else {
            return;
        };
        match (w, r) {
            (Waiting::Write { to, id }, Ok(Response::Applied { outcome, header })) => {
                // The revision as of the entry's application, not of the whole batch.
                let reply = outcome_reply(outcome, header.revision.max(0) as u64);
                self.reply(to, id, reply);
            }
            (Waiting::Read { to, id, key }, Ok(Response::Read)) => {
                let reply = self.get(key);
                self.reply(to, id, reply);
            }
            // "Request timed out" leaves a write's outcome unknown (it may yet apply):
            // the client hears nothing and records it so.
            (Waiting::Write { .. }, Err(MemberError::Timeout)) => {}
            (Waiting::Write { to, id } | Waiting::Read { to, id, .. }, Err(e)) => {
                if e == MemberError::NoLeader {
                    self.env
                        .obs
                        .count("requests refused for want of a leader", 1);
                }
                self.reply(to, id, ClientReply::Refused(e.to_string()));
            }
            (Waiting::Token { from, req }, r) => {
                // Applied (or given up on): the token is known now or never.
                let known = r.is_ok().then(|| {
                    self.tokens
                        .info(req.token.as_deref().unwrap_or(""), self.now())
                });
                match known.flatten() {
                    Some(info) => {
                        let now = self.now();
                        let auth = AuthInfo {
                            revision: u64::MAX,
                            ..info
                        };
                        self.serve(now, from, req, Some(auth));
                    }
                    None => {
                        let refused = ClientReply::Refused("etcdserver: invalid auth token".into());
                        self.reply(from, req.id, refused);
                    }
                }
            }
            (Waiting::Login { to, id }, r) => {
                let reply = match r {
                    Ok(Response::Applied {
                        outcome: Outcome::Auth(Ok(AuthOutcome::Authenticated { token, .. })),
                        ..
                    }) => ClientReply::Token(token),
                    Ok(other) => ClientReply::Refused(format!("unexpected answer {other:?}")),
                    Err(e) => ClientReply::Refused(e.to_string()),
                };
                self.reply(to, id, reply);
            }
            (Waiting::AuthChange { to, id }, r) => {
                let reply = match r {
                    Ok(Response::Applied {
                        outcome: Outcome::Auth(Ok(_)),
                        ..
                    }) => ClientReply::AuthChanged,
                    Ok(Response::Applied {
                        outcome: Outcome::Auth(Err(e)) | Outcome::Denied(e),
                        ..
                    }) => ClientReply::Refused(e.to_string()),
                    Ok(other) => ClientReply::Refused(format!("unexpected answer {other:?}")),
                    Err(e) => ClientReply::Refused(e.to_string()),
                };
                self.reply(to, id, reply);
            }
            (Waiting::Change(cc), r) => {
                let counted = match &r {
                    Ok(_) => "membership changes applied",
                    Err(MemberError::NotEnoughStarted | MemberError::Unhealthy) => {
                        "membership changes refused by the strict reconfiguration check"
                    }
                    Err(_) => "membership changes refused otherwise",
                };
                self.env.obs.count(counted, 1);
                let r = r.map(|_| ()).map_err(|e| e.to_string());
                self.env
                    .obs
                    .trace((11u8, self.spec.id, format!("{cc:?}"), r));
            }
            (_, Ok(other)) => self.env.obs.violation(format!(
                "member {:x}: unexpected answer {other:?}",
                self.spec.id
            )),
        }
    }

    fn get(&mut self, key: Bytes) -> ClientReply {
        let req = RangeRequest {
            key,
            ..Default::default()
        };
        match self.member.sm.kv.store.serve_range(&req) {
            Ok(resp) => ClientReply::Get {
                kv: resp.kvs.first().map(|kv| Found {
                    value: kv.value.clone(),
                    mod_revision: kv.mod_revision.max(0) as u64,
                    version: kv.version.max(0) as u64,
                }),
                revision: self.header_revision(),
            },
            Err(e) => ClientReply::Refused(e.to_string()),
        }
    }

    /// The watchers whose streams take responses this round.
    pub(super) fn ready_sinks(&self) -> BTreeSet<i64> {
        let round = self.rounds;
        self.sinks
            .iter()
            .filter(|(_, s)| !s.slow || round.is_multiple_of(SLOW_STREAM_ROUNDS))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sends the member's watch responses, in order, each on its watcher's stream (the
    /// answer to a RequestProgress on watcher `stream`'s).
    pub(super) fn send_watches(&mut self, out: Vec<WatchResponse>, stream: Option<i64>) {
        for r in out {
            let (id, canceled) = (r.watch_id, r.canceled);
            let on = if id == STREAM_PROGRESS_ID {
                stream
            } else {
                Some(id)
            };
            let Some(on) = on else { continue };
            self.send_watch(on, r);
            if canceled {
                if let Some(s) = self.sinks.remove(&id) {
                    self.watch_by_tag.remove(&(s.to, s.tag));
                }
            }
        }
    }

    fn send_watch(&mut self, on: i64, resp: WatchResponse) {
        let Some(sink) = self.sinks.get_mut(&on) else {
            return;
        };
        let seq = sink.next_seq;
        sink.next_seq += 1;
        let (to, tag) = (sink.to, sink.tag);
        let sent_ns = global_ns(self.env.epoch);
        self.reply(to, tag, ClientReply::Watch { seq, resp, sent_ns });
    }

    /// Ends every stream opened with require-leader (the member's leader monitor said
    /// so), as the gRPC layer ends them with "etcdserver: no leader".
    pub(super) fn end_leaderless_streams(&mut self) {
        let ended: Vec<i64> = self
            .sinks
            .iter()
            .filter(|(_, s)| s.require_leader)
            .map(|(id, _)| *id)
            .collect();
        for id in ended {
            let Some(s) = self.sinks.remove(&id) else {
                continue;
            };
            self.watch_by_tag.remove(&(s.to, s.tag));
            self.member.watch_cancel(id);
            let reason = MemberError::NoLeader.to_string();
            let end = ClientReply::StreamEnded {
                seq: s.next_seq,
                reason,
            };
            self.reply(s.to, s.tag, end);
            self.env
                .obs
                .count("require-leader watch streams ended for want of a leader", 1);
        }
    }

    pub(super) fn reply(&self, to: SocketAddr, id: u64, reply: ClientReply) {
        let ep = self.ep.clone();
        madsim::task::spawn(async move {
            let _ = ep.send_to_raw(to, id, Box::new(reply)).await;
        });
    }

    fn header_revision(&self) -> u64 {
        self.member.sm.kv.store.revision().max(0) as u64
    }
}

fn outcome_reply(outcome: Outcome, revision: u64) -> ClientReply {
    match outcome {
        Outcome::Put(Ok(_)) => ClientReply::Put { revision },
        Outcome::DeleteRange(Ok(r)) => ClientReply::Delete {
            deleted: r.deleted > 0,
            revision,
        },
        Outcome::Txn(Ok(r)) => ClientReply::Cas {
            succeeded: r.succeeded,
            revision,
        },
        Outcome::LeaseGrant(Ok((id, ttl))) => ClientReply::LeaseGrant { id, ttl, revision },
        Outcome::LeaseGrant(Err(e)) => ClientReply::Refused(e.to_string()),
        Outcome::Compact(Ok(())) => ClientReply::Compact { revision },
        Outcome::Compact(Err(e)) => ClientReply::Refused(e.to_string()),
        Outcome::Put(Err(e)) | Outcome::DeleteRange(Err(e)) | Outcome::Txn(Err(e)) => {
            ClientReply::Refused(e.to_string())
        }
        other => ClientReply::Refused(format!("unexpected outcome {other:?}")),
    }
}
