//! `--discovery <url>`: etcd 3.4's v2 discovery handshake (`etcdserver/api/v2discovery`)
//! as a state machine over HTTP request and response values.
//!
//! The discovery URL names a directory in an etcd v2 keys API. A member reads the wanted
//! cluster size from `<dir>/_config/size`, lists the registrations, registers itself as
//! `<dir>/<member id hex>` with the value `name=peerURL[,...]` unless the cluster is
//! already full, then watches the directory until `size` members have registered. The
//! first `size` registrations by creation index are the initial cluster.
//!
//! The driver runs the [`Request`]s, feeds back what came of them as [`Reply`] values,
//! sleeps when told to ([`Action::RetryAt`]) and stops at [`Action::Done`] or an error.
//! Which failures are retried, which are fatal and which texts they carry follow etcd 3.4
//! and its v2 client, so a keel member fails (or waits) exactly where an etcd member would.

use std::fmt;

use super::ids::member_id;
use super::initial_cluster::check_url;
use crate::raft::Time;

/// Per-request deadline of the non-watch requests (etcd's `client.DefaultRequestTimeout`).
pub const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Dial timeout of every request, watches included (etcd's discovery transport).
pub const DIAL_TIMEOUT_MS: u64 = 30_000;
/// Retries stop doubling their wait after this many (2^8 s = 256 s), as etcd's
/// `maxExpoentialRetries`.
const MAX_EXPONENTIAL_RETRIES: u32 = 8;
/// The key under the discovery directory that holds the configuration.
const CONFIG_KEY: &str = "_config";
/// v2 error code "Key not found".
const ERROR_CODE_KEY_NOT_FOUND: i64 = 100;
/// v2 error code "Key already exists".
const ERROR_CODE_NODE_EXIST: i64 = 105;

/// Why discovery failed. The texts are etcd's where etcd has one; the driver shows them
/// inside etcd's `failed to join discovery cluster (...)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The discovery URL is not `http(s)://host[:port][/path]`.
    #[error("invalid discovery URL {0:?}: expected http(s)://host[:port]/path without query or fragment")]
    BadDiscoveryUrl(String),
    /// `<url>/_config/size` does not exist (v2 error 100). The text is etcd's documented
    /// one (clustering guide); etcd 3.4.23 itself misses this case by a type assertion
    /// and prints the raw v2 error (`100: Key not found (/<token>) [4]`) instead.
    #[error("the cluster doesn't have a size configuration value in {0}/_config")]
    SizeNotFound(String),
    /// `<url>/_config/size` is not an unsigned decimal integer.
    #[error("discovery: size key is bad")]
    BadSizeKey,
    /// The size request was answered with something that is not etcd v2 JSON.
    #[error("discovery: bad discovery endpoint")]
    BadDiscoveryEndpoint,
    /// Another registration already holds this member's ID (v2 error 105): this member
    /// registered before and lost its data dir, or two members share peer URLs.
    #[error("discovery: found duplicate id")]
    DuplicateId,
    /// Two of the first `size` registrations carry the same name.
    #[error("discovery: found duplicate name")]
    DuplicateName {
        /// The registrations' values, comma-joined.
        cluster: String,
    },
    /// A registration's value is not `name=url[,...]` with valid URLs.
    #[error("discovery: invalid URL")]
    InvalidUrl {
        /// The registrations' values, comma-joined.
        cluster: String,
    },
    /// The first `size` registrations are other members': this one cannot join.
    #[error("discovery: cluster is full")]
    FullCluster(FullCluster),
    /// The retry budget ran out (etcd's is effectively unlimited; see
    /// [`V2Discovery::with_max_retries`]).
    #[error("discovery: too many retries")]
    TooManyRetries,
    /// The discovery service answered with a v2 error other than the ones handled above.
    #[error("{0}")]
    Service(V2Error),
    /// A success response whose body is not the v2 JSON expected.
    #[error("client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint.")]
    InvalidJson,
    /// A success response with an empty body where one was needed.
    #[error("client: response body is empty")]
    EmptyBody,
    /// The `X-Etcd-Index` header is not an unsigned integer.
    #[error("strconv.ParseUint: parsing {0:?}: invalid syntax")]
    BadIndexHeader(String),
    /// A request that is not retried (registration, the check that it is visible)
    /// got no usable answer.
    #[error("{0}")]
    Unavailable(String),
    /// A non-watch request got no answer within [`REQUEST_TIMEOUT_MS`]; etcd gives up
    /// here rather than retrying.
    #[error("context deadline exceeded (no answer from {0} within 5s)")]
    Timeout(String),
    /// The driver fed an input the machine was not waiting for.
    #[error("discovery: internal error: {0}")]
    Misuse(&'static str),
}

/// A v2 keys API error body: `{"errorCode":100,"message":"Key not found","cause":"/x","index":4}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2Error {
    /// `errorCode`.
    pub code: i64,
    /// `message`.
    pub message: String,
    /// `cause`.
    pub cause: String,
    /// `index`.
    pub index: u64,
}

impl fmt::Display for V2Error {
    /// etcd's v2 client format: `100: Key not found (/x) [4]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({}) [{}]",
            self.code, self.message, self.cause, self.index
        )
    }
}

/// The outcome "cluster is full": the members that hold the `size` places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullCluster {
    /// The first `size` registrations' values, comma-joined (`name=url,...`).
    pub cluster: String,
    /// The configured cluster size.
    pub size: u64,
}

impl fmt::Display for FullCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (size {})", self.cluster, self.size)
    }
}

impl FullCluster {
    /// The peer URLs of the members holding the places, sorted, for a proxy to reach
    /// them; fails as etcd's proxy does when the registrations do not form a cluster.
    pub fn peer_urls(&self) -> Result<Vec<String>, DiscoveryError> {
        let members = nodes_to_cluster(&self.cluster, self.size)?;
        let mut urls: Vec<String> = members.into_iter().flat_map(|(_, u)| u).collect();
        urls.sort();
        Ok(urls)
    }
}

/// HTTP method of a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `PUT` with an `application/x-www-form-urlencoded` body.
    Put,
}

/// What a request is for, so the driver can log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Read `<url>/_config/size`.
    Size,
    /// List the registrations.
    List,
    /// Register this member.
    Register,
    /// Watch this member's own key until the service shows it (etcd's `createSelf`).
    ConfirmSelf,
    /// Long-poll the directory for further registrations.
    WaitNodes,
}

/// An HTTP request for the driver to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Absolute URL, query included.
    pub url: String,
    /// Form-encoded body of a `PUT`.
    pub form: Option<String>,
    /// Deadline for the whole exchange; `None` for long-polls, which wait as long as the
    /// service takes (only the dial is bounded, by [`DIAL_TIMEOUT_MS`]).
    pub timeout_ms: Option<u64>,
    /// Why the request is made.
    pub purpose: Purpose,
}

/// What came of a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// An HTTP response arrived, body complete.
    Http {
        /// Status code.
        status: u16,
        /// The `X-Etcd-Index` header, if present.
        etcd_index: Option<String>,
        /// The body.
        body: Vec<u8>,
    },
    /// No response: refused, reset, name resolution or TLS failure, dial timeout.
    Unreachable(String),
    /// The request's [`Request::timeout_ms`] passed first.
    TimedOut,
}

/// The cluster discovery settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The first `size` registrations' values comma-joined: the `--initial-cluster`.
    pub initial_cluster: String,
    /// The token member IDs derive from: the discovery URL.
    pub token: String,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make this request and report the [`Reply`] with [`V2Discovery::on_reply`].
    Send(Request),
    /// Wait until `at`, then call [`V2Discovery::on_timer`].
    RetryAt {
        /// When to resume.
        at: Time,
        /// The wait, for the log.
        backoff_ms: u64,
        /// What is being retried, for the log.
        reason: &'static str,
        /// What went wrong, for the log.
        cause: String,
    },
    /// Discovery is complete.
    Done(Discovered),
}

/// Whether this member has registered yet: a full cluster before registering means
/// "do not register", after it means someone else won the race.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    BeforeRegister,
    AfterRegister,
}

/// A registration under the discovery directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Node {
    key: String,
    value: String,
    created_index: u64,
    modified_index: u64,
}

/// One v2 success response, reduced to what discovery reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct KeysResponse {
    node: Option<Node>,
    children: Vec<Node>,
    /// `X-Etcd-Index`, 0 when absent.
    index: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    NotStarted,
    Size(Phase),
    List {
        phase: Phase,
        size: u64,
    },
    Register,
    ConfirmSelf {
        wait_index: u64,
    },
    Wait {
        size: u64,
        all: Vec<Node>,
        wait_index: u64,
    },
    Backoff {
        at: Time,
        phase: Phase,
        cause: String,
    },
    Finished,
}

/// The discovery handshake of one member. See the module documentation.
#[derive(Debug, Clone)]
pub struct V2Discovery {
    url: String,
    /// `scheme://authority` of the discovery URL.
    endpoint: String,
    /// The directory path as etcd's client would address it.
    cluster: String,
    self_id: u64,
    /// This member's registration: `name=url,...` sorted.
    contents: String,
    retries: u32,
    max_retries: u32,
    stage: Stage,
}

impl V2Discovery {
    /// A handshake at `discovery_url` for the member `name` advertising `peer_urls`.
    /// Its member ID derives from the peer URLs with the discovery URL as token.
    pub fn new(
        discovery_url: &str,
        name: &str,
        peer_urls: &[String],
    ) -> Result<Self, DiscoveryError> {
        let (endpoint, token_path) = split_url(discovery_url)
            .ok_or_else(|| DiscoveryError::BadDiscoveryUrl(discovery_url.to_owned()))?;
        let mut pairs: Vec<String> = peer_urls.iter().map(|u| format!("{name}={u}")).collect();
        pairs.sort();
        Ok(Self {
            url: discovery_url.to_owned(),
            endpoint,
            cluster: token_path,
            self_id: member_id(peer_urls, discovery_url, None),
            contents: pairs.join(","),
            retries: 0,
            max_retries: u32::MAX,
            stage: Stage::NotStarted,
        })
    }

    /// Gives up with [`DiscoveryError::TooManyRetries`] after `n` retries (etcd: 2^32 - 1).
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The member ID this member registers under.
    pub fn member_id(&self) -> u64 {
        self.self_id
    }

    /// The value this member registers: `name=url[,...]`.
    pub fn registration(&self) -> &str {
        &self.contents
    }

    /// Registrations found so far and the size awaited, while waiting for members.
    pub fn progress(&self) -> Option<(usize, u64)> {
        match &self.stage {
            Stage::Wait { size, all, .. } => Some((all.len(), *size)),
            _ => None,
        }
    }

    /// The first request. Call once.
    pub fn start(&mut self) -> Result<Action, DiscoveryError> {
        if self.stage != Stage::NotStarted {
            return Err(DiscoveryError::Misuse("start called twice"));
        }
        Ok(self.check_cluster(Phase::BeforeRegister))
    }

    /// The outcome of the last [`Action::Send`]. An error ends the handshake.
    pub fn on_reply(&mut self, now: Time, reply: Reply) -> Result<Action, DiscoveryError> {
        let stage = std::mem::replace(&mut self.stage, Stage::Finished);
        match stage {
            Stage::Size(phase) => self.on_size(now, phase, reply),
            Stage::List { phase, size } => self.on_list(now, phase, size, reply),
            Stage::Register => self.on_register(reply),
            Stage::ConfirmSelf { wait_index } => self.on_confirm_self(wait_index, reply),
            Stage::Wait {
                size,
                all,
                wait_index,
            } => self.on_wait(now, size, all, wait_index, reply),
            other => {
                self.stage = other;
                Err(DiscoveryError::Misuse(
                    "reply while no request is outstanding",
                ))
            }
        }
    }

    /// The wait of the last [`Action::RetryAt`] is over (early calls wait again).
    pub fn on_timer(&mut self, now: Time) -> Result<Action, DiscoveryError> {
        match &self.stage {
            Stage::Backoff { at, phase, cause } => {
                let (at, phase) = (*at, *phase);
                if now < at {
                    return Ok(Action::RetryAt {
                        at,
                        backoff_ms: at.since(now),
                        reason: retry_reason(phase),
                        cause: cause.clone(),
                    });
                }
                Ok(self.check_cluster(phase))
            }
            _ => Err(DiscoveryError::Misuse("timer while not backing off")),
        }
    }

    // --- etcd's checkCluster: the size, then the registrations ---

    fn check_cluster(&mut self, phase: Phase) -> Action {
        self.stage = Stage::Size(phase);
        let key = clean(&format!("/{}/{CONFIG_KEY}/size", self.cluster));
        Action::Send(self.get(&key, Purpose::Size))
    }

    fn on_size(&mut self, now: Time, phase: Phase, reply: Reply) -> Result<Action, DiscoveryError> {
        let resp = match self.classify(reply, true)? {
            Outcome::Unavailable(cause) => return self.retry(now, phase, cause),
            Outcome::Failed(body) => {
                return Err(match parse_error(&body) {
                    Some(e) if e.code == ERROR_CODE_KEY_NOT_FOUND => {
                        DiscoveryError::SizeNotFound(self.url.clone())
                    }
                    Some(e) => DiscoveryError::Service(e),
                    None => DiscoveryError::BadDiscoveryEndpoint,
                })
            }
            Outcome::Ok { body, index } => match parse_success(&body, index.as_deref()) {
                Err(DiscoveryError::InvalidJson) => {
                    return Err(DiscoveryError::BadDiscoveryEndpoint)
                }
                other => other?,
            },
        };
        let value = resp.node.map(|n| n.value).unwrap_or_default();
        let size = parse_uint(&value).ok_or(DiscoveryError::BadSizeKey)?;
        self.stage = Stage::List { phase, size };
        Ok(Action::Send(self.get(&self.cluster, Purpose::List)))
    }

    fn on_list(
        &mut self,
        now: Time,
        phase: Phase,
        size: u64,
        reply: Reply,
    ) -> Result<Action, DiscoveryError> {
        let resp = match self.classify(reply, true)? {
            Outcome::Unavailable(cause) => return self.retry(now, phase, cause),
            Outcome::Failed(body) => return Err(failed_response(&body)),
            Outcome::Ok { body, index } => parse_success(&body, index.as_deref())?,
        };
        let self_key = format!("{:x}", self.self_id);
        let mut nodes: Vec<Node> = resp
            .children
            .into_iter()
            .filter(|n| base(&n.key) != CONFIG_KEY)
            .collect();
        nodes.sort_by_key(|n| n.created_index);
        // etcd walks the registrations in creation order: the cluster is full when the
        // first `size` of them are all someone else's. (`size - 1` wraps for a size of
        // 0, which is therefore never full, as in etcd.)
        for (i, n) in nodes.iter().enumerate() {
            if base(&n.key) == self_key {
                break;
            }
            if i as u64 >= size.wrapping_sub(1) {
                return Err(DiscoveryError::FullCluster(FullCluster {
                    cluster: join_values(&nodes[..=i]),
                    size,
                }));
            }
        }
        match phase {
            Phase::BeforeRegister => {
                self.stage = Stage::Register;
                let key = clean(&format!("/{}/{self_key}", self.cluster));
                Ok(Action::Send(Request {
                    method: Method::Put,
                    url: format!("{}{}?prevExist=false", self.endpoint, key),
                    form: Some(format!("value={}", query_escape(&self.contents))),
                    timeout_ms: Some(REQUEST_TIMEOUT_MS),
                    purpose: Purpose::Register,
                }))
            }
            Phase::AfterRegister => self.wait_nodes(nodes, size, resp.index),
        }
    }

    // --- etcd's createSelf ---

    fn on_register(&mut self, reply: Reply) -> Result<Action, DiscoveryError> {
        let resp = match self.classify(reply, true)? {
            // etcd's client sends a create once: it cannot know whether a failed
            // attempt landed, and a second one would find its own key (duplicate id).
            Outcome::Unavailable(detail) => return Err(DiscoveryError::Unavailable(detail)),
            Outcome::Failed(body) => {
                return Err(match parse_error(&body) {
                    Some(e) if e.code == ERROR_CODE_NODE_EXIST => DiscoveryError::DuplicateId,
                    Some(e) => DiscoveryError::Service(e),
                    None => DiscoveryError::InvalidJson,
                })
            }
            Outcome::Ok { body, index } => parse_success(&body, index.as_deref())?,
        };
        let created = resp.node.map(|n| n.created_index).unwrap_or(0);
        // Watch the own key from its creation: this returns at once on the server that
        // took the write, and waits while a lagging one catches up.
        Ok(self.confirm_self(created))
    }

    fn confirm_self(&mut self, wait_index: u64) -> Action {
        self.stage = Stage::ConfirmSelf { wait_index };
        let key = clean(&format!("/{}/{:x}", self.cluster, self.self_id));
        Action::Send(self.watch(&key, wait_index, false, Purpose::ConfirmSelf))
    }

    fn on_confirm_self(&mut self, wait_index: u64, reply: Reply) -> Result<Action, DiscoveryError> {
        match self.classify(reply, false)? {
            // etcd returns this watch's error as is: not retried.
            Outcome::Unavailable(detail) => Err(DiscoveryError::Unavailable(format!(
                "client: etcd cluster is unavailable or misconfigured; error #0: {detail}"
            ))),
            Outcome::Failed(body) => Err(failed_response(&body)),
            Outcome::Ok { body, .. } if body.is_empty() => Ok(self.confirm_self(wait_index)),
            Outcome::Ok { body, index } => {
                parse_success(&body, index.as_deref())?;
                Ok(self.check_cluster(Phase::AfterRegister))
            }
        }
    }

    // --- etcd's waitNodes ---

    fn wait_nodes(
        &mut self,
        mut nodes: Vec<Node>,
        size: u64,
        index: u64,
    ) -> Result<Action, DiscoveryError> {
        nodes.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        // The watch starts after the index the list was read at (etcd's AfterIndex;
        // with an index of 0 its client sends waitIndex=0, "from now").
        let wait_index = if index > 0 {
            index.saturating_add(1)
        } else {
            0
        };
        self.next_wait(size, nodes, wait_index)
    }

    fn next_wait(
        &mut self,
        size: u64,
        all: Vec<Node>,
        wait_index: u64,
    ) -> Result<Action, DiscoveryError> {
        if all.len() as u64 >= size {
            self.stage = Stage::Finished;
            let initial_cluster = join_values(&all);
            nodes_to_cluster(&initial_cluster, size)?;
            return Ok(Action::Done(Discovered {
                initial_cluster,
                token: self.url.clone(),
            }));
        }
        let req = self.watch(&self.cluster, wait_index, true, Purpose::WaitNodes);
        self.stage = Stage::Wait {
            size,
            all,
            wait_index,
        };
        Ok(Action::Send(req))
    }

    fn on_wait(
        &mut self,
        now: Time,
        size: u64,
        mut all: Vec<Node>,
        wait_index: u64,
        reply: Reply,
    ) -> Result<Action, DiscoveryError> {
        match self.classify(reply, false)? {
            // etcd starts over from the size check after the backoff.
            Outcome::Unavailable(cause) => self.retry(now, Phase::AfterRegister, cause),
            Outcome::Failed(body) => Err(failed_response(&body)),
            // etcd's watcher re-issues the same wait when the body is empty.
            Outcome::Ok { body, .. } if body.is_empty() => self.next_wait(size, all, wait_index),
            Outcome::Ok { body, index } => {
                let resp = parse_success(&body, index.as_deref())?;
                // etcd appends whatever the event carries, even an event without a node.
                let node = resp.node.unwrap_or_default();
                let next = node.modified_index.saturating_add(1);
                all.push(node);
                self.next_wait(size, all, next)
            }
        }
    }

    // --- retries ---

    fn retry(&mut self, now: Time, phase: Phase, cause: String) -> Result<Action, DiscoveryError> {
        if self.retries >= self.max_retries {
            return Err(DiscoveryError::TooManyRetries);
        }
        self.retries += 1;
        let backoff_ms = 1000u64 << self.retries.min(MAX_EXPONENTIAL_RETRIES);
        let at = now.plus(backoff_ms);
        self.stage = Stage::Backoff {
            at,
            phase,
            cause: cause.clone(),
        };
        Ok(Action::RetryAt {
            at,
            backoff_ms,
            reason: retry_reason(phase),
            cause,
        })
    }

    // --- requests and replies ---

    /// Sorts a reply as etcd's v2 cluster client does: no response or a 5xx answer is
    /// "unavailable" (the caller decides whether to retry), 200 and 201 are successes,
    /// anything else carries an error body. A deadline passing on a request that has one
    /// is fatal in etcd (the context error is returned as is); on a long-poll only the
    /// dial can time out, which is a transport failure like any other.
    fn classify(&self, reply: Reply, has_deadline: bool) -> Result<Outcome, DiscoveryError> {
        match reply {
            Reply::TimedOut if has_deadline => Err(DiscoveryError::Timeout(self.endpoint.clone())),
            Reply::TimedOut => Ok(Outcome::Unavailable(format!(
                "dial {}: i/o timeout",
                self.endpoint
            ))),
            Reply::Unreachable(e) => Ok(Outcome::Unavailable(e)),
            Reply::Http { status, .. } if status / 100 == 5 => {
                Ok(Outcome::Unavailable(if status == 500 || status == 503 {
                    format!("client: etcd member {} has no leader", self.endpoint)
                } else {
                    format!(
                        "client: etcd member {} returns server error [{}]",
                        self.endpoint,
                        status_text(status)
                    )
                }))
            }
            Reply::Http {
                status: 200 | 201,
                etcd_index,
                body,
            } => Ok(Outcome::Ok {
                body,
                index: etcd_index,
            }),
            Reply::Http { body, .. } => Ok(Outcome::Failed(body)),
        }
    }

    fn get(&self, key: &str, purpose: Purpose) -> Request {
        Request {
            method: Method::Get,
            url: format!(
                "{}{}?quorum=false&recursive=false&sorted=false",
                self.endpoint,
                canonical(key)
            ),
            form: None,
            timeout_ms: Some(REQUEST_TIMEOUT_MS),
            purpose,
        }
    }

    fn watch(&self, key: &str, wait_index: u64, recursive: bool, purpose: Purpose) -> Request {
        Request {
            method: Method::Get,
            url: format!(
                "{}{}?recursive={recursive}&wait=true&waitIndex={wait_index}",
                self.endpoint,
                canonical(key)
            ),
            form: None,
            timeout_ms: None,
            purpose,
        }
    }
}

enum Outcome {
    Unavailable(String),
    Failed(Vec<u8>),
    Ok {
        body: Vec<u8>,
        index: Option<String>,
    },
}

fn retry_reason(phase: Phase) -> &'static str {
    match phase {
        Phase::BeforeRegister => "cluster status check",
        Phase::AfterRegister => "waiting for other nodes",
    }
}

// --- etcd's nodesToCluster and URLsMap ---

/// Checks the discovered registrations as etcd does before using them: every value
/// must parse as `name=url[,...]` with valid URLs (else "invalid URL"), and there must
/// be exactly `size` distinct names (else "duplicate name": two registrations with one
/// name merge into one member). Returns the members, names sorted.
fn nodes_to_cluster(
    cluster: &str,
    size: u64,
) -> Result<Vec<(String, Vec<String>)>, DiscoveryError> {
    let members = urls_map(cluster).ok_or_else(|| DiscoveryError::InvalidUrl {
        cluster: cluster.to_owned(),
    })?;
    if members.len() as u64 != size {
        return Err(DiscoveryError::DuplicateName {
            cluster: cluster.to_owned(),
        });
    }
    Ok(members)
}

/// etcd's `types.NewURLsMap`: comma-separated `name=url`; an entry without `=` is a
/// name with an empty (invalid) URL; empty entries are skipped; URLs are trimmed.
fn urls_map(s: &str) -> Option<Vec<(String, Vec<String>)>> {
    let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for entry in s.split(',').filter(|e| !e.is_empty()) {
        let (name, url) = entry.split_once('=').unwrap_or((entry, ""));
        let url = url.trim();
        check_url(url).ok()?;
        map.entry(name.to_owned()).or_default().push(url.to_owned());
    }
    Some(
        map.into_iter()
            .map(|(n, mut u)| {
                u.sort();
                (n, u)
            })
            .collect(),
    )
}

fn join_values(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| n.value.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

// --- v2 JSON ---

/// A success body: `{"action":..,"node":{"key":..,"value":..,"nodes":[..],
/// "createdIndex":..,"modifiedIndex":..}}`, and the `X-Etcd-Index` header.
fn parse_success(body: &[u8], index: Option<&str>) -> Result<KeysResponse, DiscoveryError> {
    if body.is_empty() {
        return Err(DiscoveryError::EmptyBody);
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| DiscoveryError::InvalidJson)?;
    let mut resp = KeysResponse::default();
    match &v {
        serde_json::Value::Null => {}
        serde_json::Value::Object(o) => {
            if let Some(n) = o.get("node").filter(|n| !n.is_null()) {
                let (node, children) = parse_node(n).ok_or(DiscoveryError::InvalidJson)?;
                resp.node = Some(node);
                resp.children = children;
            }
        }
        _ => return Err(DiscoveryError::InvalidJson),
    }
    if let Some(h) = index.filter(|h| !h.is_empty()) {
        resp.index = parse_uint(h).ok_or_else(|| DiscoveryError::BadIndexHeader(h.to_owned()))?;
    }
    Ok(resp)
}

/// A node and its direct children; `None` if a field has the wrong JSON type.
fn parse_node(v: &serde_json::Value) -> Option<(Node, Vec<Node>)> {
    let o = v.as_object()?;
    let node = Node {
        key: opt_str(o.get("key"))?,
        value: opt_str(o.get("value"))?,
        created_index: opt_u64(o.get("createdIndex"))?,
        modified_index: opt_u64(o.get("modifiedIndex"))?,
    };
    let mut children = Vec::new();
    match o.get("nodes") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                children.push(parse_node(item)?.0);
            }
        }
        Some(_) => return None,
    }
    Some((node, children))
}

/// A v2 error body; `None` if it is not JSON of that shape (etcd's `ErrInvalidJSON`).
/// Field names match case-insensitively, as Go's `encoding/json` does.
fn parse_error(body: &[u8]) -> Option<V2Error> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let o = match &v {
        serde_json::Value::Null => return Some(V2Error::default()),
        serde_json::Value::Object(o) => o,
        _ => return None,
    };
    let field = |name: &str| {
        o.iter()
            .find(|(k, _)| k.as_str() == name)
            .or_else(|| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v)
    };
    let code = match field("errorCode") {
        None | Some(serde_json::Value::Null) => 0,
        Some(c) => c.as_i64()?,
    };
    Some(V2Error {
        code,
        message: opt_str(field("message"))?,
        cause: opt_str(field("cause"))?,
        index: opt_u64(field("index"))?,
    })
}

fn failed_response(body: &[u8]) -> DiscoveryError {
    parse_error(body).map_or(DiscoveryError::InvalidJson, DiscoveryError::Service)
}

fn opt_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v {
        None | Some(serde_json::Value::Null) => Some(String::new()),
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => None,
    }
}

fn opt_u64(v: Option<&serde_json::Value>) -> Option<u64> {
    match v {
        None | Some(serde_json::Value::Null) => Some(0),
        Some(n) => n.as_u64(),
    }
}

/// Go's `strconv.ParseUint(s, 10, 64)`: decimal digits only, no sign, no spaces.
fn parse_uint(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

// --- URLs and paths, as Go's net/url and path packages treat them ---

/// Splits `http(s)://authority/path` into `scheme://authority` and the path.
fn split_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    // etcd would carry a query into every request; no discovery service uses one.
    if rest.contains(['?', '#']) {
        return None;
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(char::is_whitespace) {
        return None;
    }
    Some((format!("{scheme}://{authority}"), path.to_owned()))
}

/// Go's `path.Clean` for a rooted path.
fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// etcd's `CanonicalURLPath`: rooted and cleaned, a trailing slash kept.
fn canonical(p: &str) -> String {
    let mut np = clean(p);
    if p.ends_with('/') && np != "/" {
        np.push('/');
    }
    np
}

/// Go's `path.Base`.
fn base(p: &str) -> &str {
    if p.is_empty() {
        return ".";
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/";
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Go's `url.QueryEscape`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn status_text(status: u16) -> &'static str {
    match status {
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        506 => "Variant Also Negotiates",
        507 => "Insufficient Storage",
        508 => "Loop Detected",
        510 => "Not Extended",
        511 => "Network Authentication Required",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const URL: &str = "http://127.0.0.1:2379/v2/keys/discovery/tok";
    const DIR: &str = "/v2/keys/discovery/tok";
    const EP: &str = "http://127.0.0.1:2379";

    fn peers(u: &str) -> Vec<String> {
        vec![u.to_owned()]
    }

    fn machine(name: &str, peer: &str) -> V2Discovery {
        V2Discovery::new(URL, name, &peers(peer)).unwrap()
    }

    fn id_of(peer: &str) -> String {
        format!("{:x}", member_id(&peers(peer), URL, None))
    }

    fn http(status: u16, index: u64, body: &str) -> Reply {
        Reply::Http {
            status,
            etcd_index: Some(index.to_string()),
            body: body.as_bytes().to_vec(),
        }
    }

    fn size_body(v: &str) -> String {
        format!(
            r#"{{"action":"get","node":{{"key":"{DIR}/_config/size","value":"{v}","modifiedIndex":4,"createdIndex":4}}}}"#
        )
    }

    fn v2_error(code: i64, message: &str, cause: &str, index: u64) -> String {
        format!(r#"{{"errorCode":{code},"message":"{message}","cause":"{cause}","index":{index}}}"#)
    }

    /// A registration: (id hex, value, createdIndex).
    fn node(id: &str, value: &str, created: u64) -> String {
        format!(
            r#"{{"key":"{DIR}/{id}","value":"{value}","modifiedIndex":{created},"createdIndex":{created}}}"#
        )
    }

    fn list_body(nodes: &[String]) -> String {
        let config =
            format!(r#"{{"key":"{DIR}/_config","dir":true,"modifiedIndex":4,"createdIndex":4}}"#);
        let mut all = vec![config];
        all.extend(nodes.iter().cloned());
        format!(
            r#"{{"action":"get","node":{{"key":"{DIR}","dir":true,"nodes":[{}],"modifiedIndex":4,"createdIndex":4}}}}"#,
            all.join(",")
        )
    }

    fn event(action: &str, node: &str) -> String {
        format!(r#"{{"action":"{action}","node":{node}}}"#)
    }

    fn send(a: Result<Action, DiscoveryError>) -> Request {
        match a {
            Ok(Action::Send(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn err(a: Result<Action, DiscoveryError>) -> DiscoveryError {
        match a {
            Err(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const T0: Time = Time(1_000);

    /// Drives `m` up to its registration PUT with an empty directory of size `size`.
    fn to_register(m: &mut V2Discovery, size: &str, others: &[String]) -> Request {
        let r = send(m.start());
        assert_eq!(r.purpose, Purpose::Size);
        let r = send(m.on_reply(T0, http(200, 5, &size_body(size))));
        assert_eq!(r.purpose, Purpose::List);
        send(m.on_reply(T0, http(200, 5, &list_body(others))))
    }

    #[test]
    fn three_members_happy_path_with_etcd_requests() {
        let me = "http://127.0.0.1:12380";
        let mut m = machine("m1", me);
        let id = id_of(me);
        assert_eq!(m.member_id(), member_id(&peers(me), URL, None));
        assert_eq!(m.registration(), "m1=http://127.0.0.1:12380");

        let r = send(m.start());
        assert_eq!(r.method, Method::Get);
        assert_eq!(
            r.url,
            format!("{EP}{DIR}/_config/size?quorum=false&recursive=false&sorted=false")
        );
        assert_eq!(r.timeout_ms, Some(REQUEST_TIMEOUT_MS));

        let r = send(m.on_reply(T0, http(200, 5, &size_body("3"))));
        assert_eq!(
            r.url,
            format!("{EP}{DIR}?quorum=false&recursive=false&sorted=false")
        );

        // One other member registered before us.
        let other = node("aaaa", "m0=http://127.0.0.1:11380", 6);
        let r = send(m.on_reply(T0, http(200, 6, &list_body(std::slice::from_ref(&other)))));
        assert_eq!(r.method, Method::Put);
        assert_eq!(r.purpose, Purpose::Register);
        assert_eq!(r.url, format!("{EP}{DIR}/{id}?prevExist=false"));
        assert_eq!(
            r.form.as_deref(),
            Some("value=m1%3Dhttp%3A%2F%2F127.0.0.1%3A12380")
        );
        assert_eq!(r.timeout_ms, Some(REQUEST_TIMEOUT_MS));

        let mine = node(&id, "m1=http://127.0.0.1:12380", 7);
        let r = send(m.on_reply(T0, http(201, 7, &event("create", &mine))));
        assert_eq!(r.purpose, Purpose::ConfirmSelf);
        assert_eq!(
            r.url,
            format!("{EP}{DIR}/{id}?recursive=false&wait=true&waitIndex=7")
        );
        assert_eq!(r.timeout_ms, None);

        let r = send(m.on_reply(T0, http(200, 7, &event("create", &mine))));
        assert_eq!(r.purpose, Purpose::Size);
        let r = send(m.on_reply(T0, http(200, 7, &size_body("3"))));
        assert_eq!(r.purpose, Purpose::List);
        let r = send(m.on_reply(T0, http(200, 9, &list_body(&[mine.clone(), other.clone()]))));
        assert_eq!(r.purpose, Purpose::WaitNodes);
        assert_eq!(
            r.url,
            format!("{EP}{DIR}?recursive=true&wait=true&waitIndex=10")
        );
        assert_eq!(m.progress(), Some((2, 3)));

        // An empty long-poll body re-issues the same wait, as etcd's watcher does.
        let again = send(m.on_reply(T0, http(200, 9, "")));
        assert_eq!(again, r);

        let third = node("cccc", "m2=http://127.0.0.1:13380", 12);
        let done = m.on_reply(T0, http(200, 12, &event("create", &third)));
        assert_eq!(
            done,
            Ok(Action::Done(Discovered {
                initial_cluster:
                    "m0=http://127.0.0.1:11380,m1=http://127.0.0.1:12380,m2=http://127.0.0.1:13380"
                        .into(),
                token: URL.into(),
            }))
        );
    }

    #[test]
    fn wait_index_follows_each_event() {
        let me = "http://127.0.0.1:12380";
        let mut m = machine("m1", me);
        let id = id_of(me);
        to_register(&mut m, "4", &[]);
        let mine = node(&id, "m1=http://127.0.0.1:12380", 7);
        send(m.on_reply(T0, http(201, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &size_body("4"))));
        let r = send(m.on_reply(T0, http(200, 7, &list_body(&[mine]))));
        assert!(r.url.ends_with("waitIndex=8"), "{}", r.url);
        let r = send(m.on_reply(
            T0,
            http(200, 20, &event("create", &node("b", "b=http://h:2", 20))),
        ));
        assert!(r.url.ends_with("waitIndex=21"), "{}", r.url);
        assert_eq!(m.progress(), Some((2, 4)));
    }

    #[test]
    fn registrations_are_ordered_by_created_index_and_config_skipped() {
        let me = "http://127.0.0.1:12380";
        let id = id_of(me);
        let mut m = machine("m1", me);
        to_register(&mut m, "2", &[]);
        let mine = node(&id, "m1=http://127.0.0.1:12380", 9);
        send(m.on_reply(T0, http(201, 9, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 9, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 9, &size_body("2"))));
        // Listed out of order; the earlier registration comes first in the result.
        let other = node("bbbb", "m0=http://127.0.0.1:11380", 8);
        let done = m.on_reply(T0, http(200, 9, &list_body(&[mine, other])));
        assert_eq!(
            done,
            Ok(Action::Done(Discovered {
                initial_cluster: "m0=http://127.0.0.1:11380,m1=http://127.0.0.1:12380".into(),
                token: URL.into(),
            }))
        );
    }

    #[test]
    fn several_peer_urls_register_sorted_and_escaped() {
        let urls = vec![
            "https://b.example:2380".to_owned(),
            "http://a example:2380".to_owned(),
        ];
        let mut m = V2Discovery::new(URL, "n 1", &urls).unwrap();
        assert_eq!(
            m.registration(),
            "n 1=http://a example:2380,n 1=https://b.example:2380"
        );
        let r = to_register(&mut m, "3", &[]);
        assert_eq!(
            r.form.as_deref(),
            Some(
                "value=n+1%3Dhttp%3A%2F%2Fa+example%3A2380%2Cn+1%3Dhttps%3A%2F%2Fb.example%3A2380"
            )
        );
        assert_eq!(m.member_id(), member_id(&urls, URL, None));
    }

    #[test]
    fn discovery_url_shapes() {
        let p = peers("http://127.0.0.1:12380");
        let mut m = V2Discovery::new("HTTPS://disc.example/tok/", "a", &p).unwrap();
        let r = send(m.start());
        assert_eq!(
            r.url,
            "https://disc.example/tok/_config/size?quorum=false&recursive=false&sorted=false"
        );
        // The directory keeps its trailing slash, as etcd's CanonicalURLPath does.
        let r = send(m.on_reply(T0, http(200, 1, &size_body("1"))));
        assert_eq!(
            r.url,
            "https://disc.example/tok/?quorum=false&recursive=false&sorted=false"
        );
        let mut m = V2Discovery::new("http://h:1//a/./b/../tok", "a", &p).unwrap();
        assert_eq!(
            send(m.start()).url,
            "http://h:1/a/tok/_config/size?quorum=false&recursive=false&sorted=false"
        );
        for bad in [
            "foo",
            "ftp://h/x",
            "http:///x",
            "http://h/x?y=1",
            "http://h/x#f",
            "",
        ] {
            assert_eq!(
                V2Discovery::new(bad, "a", &p).err(),
                Some(DiscoveryError::BadDiscoveryUrl(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn size_missing_is_fatal_with_etcd_text() {
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        let e = err(m.on_reply(
            T0,
            http(404, 4, &v2_error(100, "Key not found", "/discovery/tok", 4)),
        ));
        assert_eq!(e, DiscoveryError::SizeNotFound(URL.into()));
        assert_eq!(
            e.to_string(),
            format!("the cluster doesn't have a size configuration value in {URL}/_config")
        );
        // The machine is finished: further input is refused.
        assert!(matches!(
            m.on_reply(T0, http(200, 1, "{}")),
            Err(DiscoveryError::Misuse(_))
        ));
    }

    #[test]
    fn size_bad_values() {
        for v in [
            "three",
            "-1",
            "+3",
            " 3",
            "3 ",
            "",
            "18446744073709551616",
            "1_0",
        ] {
            let mut m = machine("m1", "http://127.0.0.1:12380");
            send(m.start());
            let e = err(m.on_reply(T0, http(200, 4, &size_body(v))));
            assert_eq!(e, DiscoveryError::BadSizeKey, "{v:?}");
            assert_eq!(e.to_string(), "discovery: size key is bad");
        }
        // A directory where the size should be has no value: bad too.
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        let dir = format!(r#"{{"action":"get","node":{{"key":"{DIR}/_config/size","dir":true}}}}"#);
        assert_eq!(
            err(m.on_reply(T0, http(200, 4, &dir))),
            DiscoveryError::BadSizeKey
        );
    }

    #[test]
    fn size_answered_by_something_not_etcd() {
        for reply in [
            http(404, 0, "<html>not found</html>"),
            http(200, 0, "<html>hello</html>"),
            http(200, 0, "[1,2]"),
            http(302, 0, ""),
            http(200, 0, r#"{"node":{"value":3}}"#),
        ] {
            let mut m = machine("m1", "http://127.0.0.1:12380");
            send(m.start());
            let e = err(m.on_reply(T0, reply.clone()));
            assert_eq!(e, DiscoveryError::BadDiscoveryEndpoint, "{reply:?}");
            assert_eq!(e.to_string(), "discovery: bad discovery endpoint");
        }
        // An empty success body is etcd's client error, not "bad endpoint".
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        let e = err(m.on_reply(T0, http(200, 0, "")));
        assert_eq!(e.to_string(), "client: response body is empty");
    }

    #[test]
    fn other_service_errors_carry_etcds_format() {
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        let e = err(m.on_reply(
            T0,
            http(
                401,
                9,
                &v2_error(
                    110,
                    "The request requires user authentication",
                    "Insufficient credentials",
                    0,
                ),
            ),
        ));
        assert_eq!(
            e.to_string(),
            "110: The request requires user authentication (Insufficient credentials) [0]"
        );
        // Go's encoding/json matches field names regardless of case.
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        let e = err(m.on_reply(T0, http(403, 9, r#"{"ErrorCode":7,"MESSAGE":"m"}"#)));
        assert_eq!(e.to_string(), "7: m () [0]");
    }

    #[test]
    fn unavailable_service_backs_off_exponentially_then_constantly() {
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        let mut now = T0;
        let mut waits = Vec::new();
        for i in 0..11 {
            let reply = match i % 4 {
                0 => Reply::Unreachable("connection refused".into()),
                1 => http(503, 0, ""),
                2 => http(500, 0, "oops"),
                _ => http(502, 0, ""),
            };
            match m.on_reply(now, reply) {
                Ok(Action::RetryAt {
                    at,
                    backoff_ms,
                    reason,
                    cause,
                }) => {
                    assert_eq!(reason, "cluster status check");
                    let want = match i % 4 {
                        0 => "connection refused",
                        1 | 2 => "client: etcd member http://127.0.0.1:2379 has no leader",
                        _ => "client: etcd member http://127.0.0.1:2379 returns server error [Bad Gateway]",
                    };
                    assert_eq!(cause, want);
                    assert_eq!(at, now.plus(backoff_ms));
                    waits.push(backoff_ms / 1000);
                    // An early timer keeps waiting for the same moment.
                    assert_eq!(
                        m.on_timer(now.plus(1)),
                        Ok(Action::RetryAt {
                            at,
                            backoff_ms: backoff_ms - 1,
                            reason,
                            cause: want.to_owned(),
                        })
                    );
                    now = at;
                    let r = send(m.on_timer(now));
                    assert_eq!(r.purpose, Purpose::Size);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 256, 256, 256]);
    }

    #[test]
    fn list_unavailable_retries_from_the_size_check() {
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        send(m.on_reply(T0, http(200, 4, &size_body("3"))));
        let a = m.on_reply(T0, Reply::Unreachable("reset".into()));
        assert!(matches!(
            a,
            Ok(Action::RetryAt {
                backoff_ms: 2000,
                ..
            })
        ));
        assert_eq!(send(m.on_timer(T0.plus(2000))).purpose, Purpose::Size);
    }

    #[test]
    fn retry_budget_runs_out() {
        let mut m = machine("m1", "http://127.0.0.1:12380").with_max_retries(2);
        send(m.start());
        for _ in 0..2 {
            let Ok(Action::RetryAt { at, .. }) = m.on_reply(T0, http(503, 0, "")) else {
                panic!("expected a retry")
            };
            send(m.on_timer(at));
        }
        let e = err(m.on_reply(T0, http(503, 0, "")));
        assert_eq!(e.to_string(), "discovery: too many retries");
    }

    #[test]
    fn deadline_on_a_read_is_fatal() {
        let mut m = machine("m1", "http://127.0.0.1:12380");
        send(m.start());
        let e = err(m.on_reply(T0, Reply::TimedOut));
        assert_eq!(e, DiscoveryError::Timeout(EP.into()));
        assert!(e.to_string().starts_with("context deadline exceeded"));
    }

    #[test]
    fn full_cluster_before_registering_does_not_register() {
        let mut m = machine("m4", "http://127.0.0.1:14380");
        send(m.start());
        send(m.on_reply(T0, http(200, 4, &size_body("3"))));
        let others = [
            node("c", "m3=http://127.0.0.1:13380", 9),
            node("a", "m1=http://127.0.0.1:11380", 5),
            node("b", "m2=http://127.0.0.1:12380", 7),
            node("d", "m5=http://127.0.0.1:15380", 11),
        ];
        let e = err(m.on_reply(T0, http(200, 11, &list_body(&others))));
        let DiscoveryError::FullCluster(full) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(e.to_string(), "discovery: cluster is full");
        assert_eq!(
            full.cluster,
            "m1=http://127.0.0.1:11380,m2=http://127.0.0.1:12380,m3=http://127.0.0.1:13380"
        );
        assert_eq!(full.size, 3);
        assert_eq!(
            full.peer_urls(),
            Ok(vec![
                "http://127.0.0.1:11380".to_owned(),
                "http://127.0.0.1:12380".to_owned(),
                "http://127.0.0.1:13380".to_owned(),
            ])
        );
    }

    #[test]
    fn full_cluster_after_registering_when_others_won_the_race() {
        let me = "http://127.0.0.1:14380";
        let id = id_of(me);
        let mut m = machine("m4", me);
        to_register(&mut m, "2", &[]);
        let mine = node(&id, "m4=http://127.0.0.1:14380", 9);
        send(m.on_reply(T0, http(201, 9, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 9, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 9, &size_body("2"))));
        let list = [
            node("a", "m1=http://127.0.0.1:11380", 5),
            node("b", "m2=http://127.0.0.1:12380", 7),
            mine,
        ];
        let e = err(m.on_reply(T0, http(200, 9, &list_body(&list))));
        assert!(matches!(e, DiscoveryError::FullCluster(_)), "{e:?}");
    }

    #[test]
    fn own_registration_among_the_first_is_not_full() {
        let me = "http://127.0.0.1:12380";
        let id = id_of(me);
        let mut m = machine("m2", me);
        to_register(&mut m, "2", &[]);
        let mine = node(&id, "m2=http://127.0.0.1:12380", 7);
        send(m.on_reply(T0, http(201, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &size_body("2"))));
        // A latecomer registered after us; the first two by creation are the cluster.
        let list = [
            node("a", "m1=http://127.0.0.1:11380", 5),
            mine,
            node("z", "late=http://127.0.0.1:19380", 8),
        ];
        assert_eq!(
            m.on_reply(T0, http(200, 8, &list_body(&list))),
            Ok(Action::Done(Discovered {
                initial_cluster: "m1=http://127.0.0.1:11380,m2=http://127.0.0.1:12380".into(),
                token: URL.into(),
            }))
        );
    }

    #[test]
    fn registration_failures_are_fatal() {
        let cases: [(Reply, &str); 5] = [
            (
                http(412, 9, &v2_error(105, "Key already exists", "/x", 9)),
                "discovery: found duplicate id",
            ),
            (
                http(503, 0, ""),
                "client: etcd member http://127.0.0.1:2379 has no leader",
            ),
            (
                http(504, 0, ""),
                "client: etcd member http://127.0.0.1:2379 returns server error [Gateway Timeout]",
            ),
            (
                Reply::Unreachable("connection refused".into()),
                "connection refused",
            ),
            (
                http(403, 0, &v2_error(107, "Root is read only", "/", 3)),
                "107: Root is read only (/) [3]",
            ),
        ];
        for (reply, text) in cases {
            let mut m = machine("m1", "http://127.0.0.1:12380");
            to_register(&mut m, "3", &[]);
            assert_eq!(err(m.on_reply(T0, reply)).to_string(), text);
        }
        let mut m = machine("m1", "http://127.0.0.1:12380");
        to_register(&mut m, "3", &[]);
        assert_eq!(
            err(m.on_reply(T0, Reply::TimedOut)),
            DiscoveryError::Timeout(EP.into())
        );
        let mut m = machine("m1", "http://127.0.0.1:12380");
        to_register(&mut m, "3", &[]);
        assert_eq!(
            err(m.on_reply(T0, http(201, 0, ""))),
            DiscoveryError::EmptyBody
        );
    }

    #[test]
    fn confirming_own_registration() {
        let me = "http://127.0.0.1:12380";
        let id = id_of(me);
        let mine = node(&id, "m1=http://127.0.0.1:12380", 7);
        let mut m = machine("m1", me);
        to_register(&mut m, "3", &[]);
        let r = send(m.on_reply(T0, http(201, 7, &event("create", &mine))));
        // Empty body: the same watch again.
        assert_eq!(send(m.on_reply(T0, http(200, 7, ""))), r);
        // Unavailable: etcd does not retry this watch.
        let e = err(m.on_reply(T0, Reply::Unreachable("connection reset".into())));
        assert_eq!(
            e.to_string(),
            "client: etcd cluster is unavailable or misconfigured; error #0: connection reset"
        );
    }

    #[test]
    fn waiting_survives_an_outage_and_resumes_from_the_size_check() {
        let me = "http://127.0.0.1:12380";
        let id = id_of(me);
        let mine = node(&id, "m1=http://127.0.0.1:12380", 7);
        let mut m = machine("m1", me);
        to_register(&mut m, "2", &[]);
        send(m.on_reply(T0, http(201, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &size_body("2"))));
        send(m.on_reply(T0, http(200, 7, &list_body(std::slice::from_ref(&mine)))));
        let Ok(Action::RetryAt { at, reason, .. }) =
            m.on_reply(T0, Reply::Unreachable("refused".into()))
        else {
            panic!("expected a retry")
        };
        assert_eq!(reason, "waiting for other nodes");
        // After the wait: size, list, then waiting again (no second registration).
        assert_eq!(send(m.on_timer(at)).purpose, Purpose::Size);
        send(m.on_reply(at, http(200, 9, &size_body("2"))));
        let r = send(m.on_reply(at, http(200, 9, &list_body(std::slice::from_ref(&mine)))));
        assert_eq!(r.purpose, Purpose::WaitNodes);
        assert!(r.url.ends_with("waitIndex=10"));
        // A dial timeout on a long-poll is a transport failure, retried too.
        assert!(matches!(
            m.on_reply(at, Reply::TimedOut),
            Ok(Action::RetryAt { .. })
        ));
    }

    #[test]
    fn waiting_fails_on_a_service_error() {
        let me = "http://127.0.0.1:12380";
        let id = id_of(me);
        let mine = node(&id, "m1=http://127.0.0.1:12380", 7);
        let mut m = machine("m1", me);
        to_register(&mut m, "2", &[]);
        send(m.on_reply(T0, http(201, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &event("create", &mine))));
        send(m.on_reply(T0, http(200, 7, &size_body("2"))));
        send(m.on_reply(T0, http(200, 7, &list_body(std::slice::from_ref(&mine)))));
        let e = err(m.on_reply(
            T0,
            http(
                400,
                2000,
                &v2_error(
                    401,
                    "The event in requested index is outdated and cleared",
                    "the requested history has been cleared [1008/8]",
                    2007,
                ),
            ),
        ));
        assert_eq!(
            e.to_string(),
            "401: The event in requested index is outdated and cleared (the requested history has been cleared [1008/8]) [2007]"
        );
    }

    /// Two members start with the same `--name`: both register (their peer URLs, hence
    /// IDs, differ) and both refuse the result.
    #[test]
    fn duplicate_name_fails_every_member() {
        let a = "http://127.0.0.1:12380";
        let b = "http://127.0.0.1:13380";
        let (ida, idb) = (id_of(a), id_of(b));
        assert_ne!(ida, idb);
        let na = node(&ida, "same=http://127.0.0.1:12380", 6);
        let nb = node(&idb, "same=http://127.0.0.1:13380", 7);
        for (me, mine, created) in [(a, &na, 6), (b, &nb, 7)] {
            let mut m = machine("same", me);
            to_register(&mut m, "2", &[]);
            send(m.on_reply(T0, http(201, created, &event("create", mine))));
            send(m.on_reply(T0, http(200, created, &event("create", mine))));
            send(m.on_reply(T0, http(200, 7, &size_body("2"))));
            let e = err(m.on_reply(T0, http(200, 7, &list_body(&[na.clone(), nb.clone()]))));
            assert_eq!(e.to_string(), "discovery: found duplicate name");
            assert!(matches!(e, DiscoveryError::DuplicateName { .. }));
        }
        // The same through the wait: the second registration arrives as an event.
        let mut m = machine("same", a);
        to_register(&mut m, "2", &[]);
        send(m.on_reply(T0, http(201, 6, &event("create", &na))));
        send(m.on_reply(T0, http(200, 6, &event("create", &na))));
        send(m.on_reply(T0, http(200, 6, &size_body("2"))));
        send(m.on_reply(T0, http(200, 6, &list_body(std::slice::from_ref(&na)))));
        let e = err(m.on_reply(T0, http(200, 7, &event("create", &nb))));
        assert!(matches!(e, DiscoveryError::DuplicateName { .. }), "{e:?}");
    }

    #[test]
    fn invalid_registration_value() {
        let me = "http://127.0.0.1:12380";
        let id = id_of(me);
        let mine = node(&id, "m1=http://127.0.0.1:12380", 7);
        for bad in ["garbage", "x=localhost:2380", "x=http://h:1/path"] {
            let mut m = machine("m1", me);
            to_register(&mut m, "2", &[]);
            send(m.on_reply(T0, http(201, 7, &event("create", &mine))));
            send(m.on_reply(T0, http(200, 7, &event("create", &mine))));
            send(m.on_reply(T0, http(200, 7, &size_body("2"))));
            let list = [node("0", bad, 5), mine.clone()];
            let e = err(m.on_reply(T0, http(200, 7, &list_body(&list))));
            assert_eq!(e.to_string(), "discovery: invalid URL", "{bad}");
        }
        // A full cluster whose registrations are unusable cannot be proxied either.
        let full = FullCluster {
            cluster: "a=http://h:1,a=http://h:2".into(),
            size: 2,
        };
        assert!(matches!(
            full.peer_urls(),
            Err(DiscoveryError::DuplicateName { .. })
        ));
    }

    #[test]
    fn list_answers_that_are_not_etcd() {
        let cases: [(Reply, DiscoveryError); 4] = [
            (http(200, 5, "not json"), DiscoveryError::InvalidJson),
            (http(200, 5, ""), DiscoveryError::EmptyBody),
            (http(404, 5, "not json"), DiscoveryError::InvalidJson),
            (
                Reply::Http {
                    status: 200,
                    etcd_index: Some("x1".into()),
                    body: list_body(&[]).into_bytes(),
                },
                DiscoveryError::BadIndexHeader("x1".into()),
            ),
        ];
        for (reply, want) in cases {
            let mut m = machine("m1", "http://127.0.0.1:12380");
            send(m.start());
            send(m.on_reply(T0, http(200, 4, &size_body("3"))));
            assert_eq!(err(m.on_reply(T0, reply)), want);
        }
        assert_eq!(
            DiscoveryError::InvalidJson.to_string(),
            "client: response is invalid json. The endpoint is probably not valid etcd cluster endpoint."
        );
        assert_eq!(
            DiscoveryError::BadIndexHeader("x1".into()).to_string(),
            "strconv.ParseUint: parsing \"x1\": invalid syntax"
        );
    }

    #[test]
    fn inputs_out_of_turn_are_refused() {
        let mut m = machine("m1", "http://127.0.0.1:12380");
        assert!(matches!(
            m.on_reply(T0, http(200, 1, "{}")),
            Err(DiscoveryError::Misuse(_))
        ));
        assert!(matches!(m.on_timer(T0), Err(DiscoveryError::Misuse(_))));
        send(m.start());
        assert!(matches!(m.start(), Err(DiscoveryError::Misuse(_))));
        assert!(matches!(m.on_timer(T0), Err(DiscoveryError::Misuse(_))));
    }

    #[test]
    fn go_path_helpers() {
        assert_eq!(clean("/a//b/./c/.."), "/a/b");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(canonical(""), "/");
        assert_eq!(canonical("/a/b/"), "/a/b/");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base(""), ".");
        assert_eq!(base("///"), "/");
        assert_eq!(query_escape("a b=c/~"), "a+b%3Dc%2F~");
    }

    fn json_value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("1.5".to_owned()),
            "[a-z0-9=:/,.]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            let field = prop_oneof![
                Just("key"),
                Just("value"),
                Just("nodes"),
                Just("node"),
                Just("createdIndex"),
                Just("modifiedIndex"),
                Just("errorCode"),
                Just("message"),
                Just("index"),
                Just("x"),
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((field, inner), 0..5).prop_map(|v| {
                    let fields: Vec<String> =
                        v.into_iter().map(|(k, x)| format!("\"{k}\":{x}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    fn reply() -> impl Strategy<Value = Reply> {
        let body = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            json_value().prop_map(String::into_bytes),
        ];
        let status = prop_oneof![
            Just(200u16),
            Just(201),
            Just(404),
            Just(412),
            Just(503),
            0u16..1000
        ];
        let index = prop_oneof![
            Just(None),
            any::<u64>().prop_map(|n| Some(n.to_string())),
            "[0-9a-z-]{0,4}".prop_map(Some),
        ];
        prop_oneof![
            6 => (status, index, body).prop_map(|(status, etcd_index, body)| Reply::Http { status, etcd_index, body }),
            1 => Just(Reply::TimedOut),
            1 => ".{0,8}".prop_map(Reply::Unreachable),
        ]
    }

    proptest! {
        /// Whatever the service answers, in whatever order, the machine never panics and
        /// only ever asks for requests to its own service.
        #[test]
        fn arbitrary_replies_never_panic(replies in prop::collection::vec(reply(), 1..24), size in 0u64..5) {
            let mut m = machine("m1", "http://127.0.0.1:12380");
            let mut action = m.start();
            // Steer the first reply to a valid size sometimes, to reach the later stages.
            let mut first = true;
            for r in replies {
                let r = if first && size > 0 { first = false; http(200, 1, &size_body(&size.to_string())) } else { r };
                match action {
                    Ok(Action::Send(req)) => {
                        prop_assert!(req.url.starts_with(EP));
                        action = m.on_reply(T0, r);
                    }
                    Ok(Action::RetryAt { at, .. }) => action = m.on_timer(at),
                    Ok(Action::Done(_)) | Err(_) => break,
                }
            }
        }
    }
}
