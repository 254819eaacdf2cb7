//! The server's configuration from etcd's command-line flags and `ETCD_*` environment.
//!
//! Keel is a drop-in replacement, so it takes etcd 3.4's flags with etcd's defaults, its
//! Go-style spellings (`-name x`, `--flag=false`), and the `ETCD_FOO_BAR` variable for
//! every `--foo-bar` flag, which systemd units in the wild feed through `EnvironmentFile=`.
//! Error texts follow etcd's wherever etcd has one, so operators can search for them.
//!
//! Parsing goes in three steps: clap recognises the flags and captures every value as a
//! string; values missing from the command line are looked up in the environment through
//! a caller-supplied function (tests never touch the process environment); then each
//! string is converted and validated knowing whether it came from a flag or a variable,
//! so an error names the right one.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use keel_core::discovery::{check_url, InitialCluster};
use keel_runtime_tokio::go_duration::parse as parse_go_duration;
use keel_runtime_tokio::listen::{is_secure_url, unix_path, BindAddr};

use crate::config_file;

/// The backend quota when `--quota-backend-bytes` is 0, as etcd's `DefaultQuotaBytes`.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// etcd's upper bound on `--election-timeout`, in milliseconds.
const MAX_ELECTION_MS: u64 = 50_000;

/// Whether a flag takes a value or is a Go-style boolean switch.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Value,
    Bool,
}

/// One flag: its long name (without `--`), kind, etcd default (for `--help`) and help.
struct Spec {
    name: &'static str,
    kind: Kind,
    default: &'static str,
    help: &'static str,
}

const fn value(name: &'static str, default: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        kind: Kind::Value,
        default,
        help,
    }
}

const fn switch(name: &'static str, default: &'static str, help: &'static str) -> Spec {
    Spec {
        name,
        kind: Kind::Bool,
        default,
        help,
    }
}

/// Every flag keel accepts. The defaults here are the ones the conversion below applies;
/// keeping them in one table keeps `--help` and behaviour in step.
#[rustfmt::skip]
const SPECS: &[Spec] = &[
    value("config-file", "", "Path to the server configuration file (YAML, as etcd 3.4 reads it); other flags and ETCD_* variables are then ignored."),
    // Member.
    value("name", "default", "Human-readable name for this member."),
    value("data-dir", "", "Path to the data directory [default: <name>.keel]."),
    value("wal-dir", "", "Path to a dedicated WAL directory."),
    value("snapshot-count", "100000", "Committed transactions that trigger a snapshot to disk."),
    value("heartbeat-interval", "100", "Time (in milliseconds) of a heartbeat interval."),
    value("election-timeout", "1000", "Time (in milliseconds) for an election to timeout."),
    switch("initial-election-tick-advance", "true", "Fast-forward initial election ticks on boot for faster election."),
    value("listen-peer-urls", "http://localhost:2380", "List of URLs to listen on for peer traffic."),
    value("listen-client-urls", "http://localhost:2379", "List of URLs to listen on for client traffic."),
    value("listen-metrics-urls", "", "List of URLs to listen on for the metrics and health endpoints."),
    value("max-snapshots", "5", "Maximum number of snapshot files to retain (0 is unlimited)."),
    value("max-wals", "5", "Maximum number of wal files to retain (0 is unlimited)."),
    value("quota-backend-bytes", "0", "Raise alarms when backend size exceeds the given quota (0 means 2 GiB)."),
    value("max-txn-ops", "128", "Maximum number of operations permitted in a transaction."),
    value("max-request-bytes", "1572864", "Maximum client request size in bytes the server will accept."),
    value("grpc-keepalive-min-time", "5s", "Minimum interval a client should wait before pinging the server."),
    value("grpc-keepalive-interval", "2h", "Frequency of server-to-client pings checking a connection (0 disables)."),
    value("grpc-keepalive-timeout", "20s", "Wait before closing a non-responsive connection (0 disables)."),
    value("max-concurrent-streams", "4294967295", "Maximum concurrent streams that each client can open at a time."),
    value("backend-batch-interval", "", "Ignored: keel has no bbolt backend to batch commits of."),
    value("backend-batch-limit", "0", "Ignored: keel has no bbolt backend to batch commits of."),
    // Clustering.
    value("initial-advertise-peer-urls", "http://localhost:2380", "This member's peer URLs to advertise to the rest of the cluster."),
    value("initial-cluster", "", "Initial cluster for bootstrapping [default: <name>=<each initial advertise peer URL>]."),
    value("initial-cluster-state", "new", "Initial cluster state ('new' or 'existing')."),
    value("initial-cluster-token", "etcd-cluster", "Initial cluster token for the etcd cluster during bootstrap."),
    value("advertise-client-urls", "http://localhost:2379", "This member's client URLs to advertise to the public."),
    value("discovery", "", "Discovery URL used to bootstrap the cluster."),
    value("discovery-fallback", "proxy", "Expected behavior ('exit' or 'proxy') when discovery services fails."),
    value("discovery-proxy", "", "HTTP proxy to use for traffic to discovery service."),
    value("discovery-srv", "", "DNS domain used to bootstrap initial cluster."),
    value("discovery-srv-name", "", "Suffix to the dns srv name queried when bootstrapping."),
    switch("force-new-cluster", "false", "Force to create a new one member cluster."),
    switch("strict-reconfig-check", "true", "Reject reconfiguration requests that would cause quorum loss."),
    switch("pre-vote", "false", "Enable the raft Pre-Vote algorithm to prevent disruption when a node rejoins."),
    value("auto-compaction-mode", "periodic", "Interpret auto-compaction-retention as 'periodic' time or 'revision' count."),
    value("auto-compaction-retention", "0", "Auto compaction retention for the mvcc key value store (0 disables)."),
    switch("enable-v2", "false", "Accept etcd V2 client requests."),
    // Security.
    value("cert-file", "", "Path to the client server TLS cert file."),
    value("key-file", "", "Path to the client server TLS key file."),
    switch("client-cert-auth", "false", "Enable client cert authentication."),
    value("trusted-ca-file", "", "Path to the client server TLS trusted CA cert file."),
    switch("auto-tls", "false", "Client TLS using generated certificates."),
    value("peer-cert-file", "", "Path to the peer server TLS cert file."),
    value("peer-key-file", "", "Path to the peer server TLS key file."),
    switch("peer-client-cert-auth", "false", "Enable peer client cert authentication."),
    value("peer-trusted-ca-file", "", "Path to the peer server TLS trusted CA file."),
    switch("peer-auto-tls", "false", "Peer TLS using generated certificates."),
    value("client-crl-file", "", "Path to the client certificate revocation list file."),
    value("client-cert-allowed-hostname", "", "Allowed TLS hostname for client cert authentication."),
    value("peer-crl-file", "", "Path to the peer certificate revocation list file."),
    value("peer-cert-allowed-cn", "", "Required CN for client certs connecting to the peer endpoint."),
    value("peer-cert-allowed-hostname", "", "Allowed TLS hostname for inter peer authentication."),
    switch("experimental-peer-skip-client-san-verification", "false", "Skip verification of SAN field in client certificate for peer connections."),
    value("cipher-suites", "", "Comma-separated list of supported TLS cipher suites."),
    value("tls-min-version", "", "Minimum TLS version supported."),
    value("cors", "*", "Comma-separated whitelist of origins for CORS (empty or * means allow all)."),
    value("host-whitelist", "*", "Acceptable hostnames from HTTP client requests, if server is not secure (empty or * means allow all)."),
    // Auth.
    value("auth-token", "simple", "Specify auth token type and options."),
    value("bcrypt-cost", "10", "Specify bcrypt algorithm cost factor for auth password hashing."),
    value("auth-token-ttl", "300", "The lifetime in seconds of the auth token."),
    // Logging and profiling.
    value("logger", "zap", "Specify 'zap' for structured logging or 'capnslog'."),
    value("log-level", "info", "Configures log level: debug, info, warn, error, panic, or fatal."),
    value("log-outputs", "default", "Specify 'stdout' or 'stderr' to skip journald logging, or file paths."),
    switch("enable-pprof", "false", "Enable runtime profiling data via HTTP server."),
    value("metrics", "basic", "Set level of detail for exported metrics ('basic' or 'extensive')."),
    switch("debug", "false", "Enable debug-level logging (deprecated: use --log-level=debug)."),
    value("log-package-levels", "", "Per-package log levels (deprecated; ignored by keel)."),
    value("log-output", "default", "Deprecated: use --log-outputs."),
    switch("enable-grpc-gateway", "true", "Enable the gRPC gateway (JSON over HTTP)."),
    // v2 proxy.
    value("proxy", "off", "Proxy mode setting ('off', 'readonly' or 'on')."),
    value("proxy-failure-wait", "5000", "Time (in milliseconds) an endpoint will be held in a failed state."),
    value("proxy-refresh-interval", "30000", "Time (in milliseconds) of the endpoints refresh interval."),
    value("proxy-dial-timeout", "1000", "Time (in milliseconds) for a dial to timeout."),
    value("proxy-write-timeout", "5000", "Time (in milliseconds) for a write to timeout."),
    value("proxy-read-timeout", "0", "Time (in milliseconds) for a read to timeout."),
    // Experimental.
    value("experimental-watch-progress-notify-interval", "10m", "Duration of periodic watch progress notifications."),
    switch("experimental-enable-lease-checkpoint", "false", "Enable to persist lease remaining TTL to prevent indefinite auto-renewal of long lived leases."),
    value("experimental-lease-checkpoint-interval", "5m0s", "Duration of periodic lease checkpoints, used when experimental-enable-lease-checkpoint is on."),
    switch("experimental-initial-corrupt-check", "false", "Enable to check data corruption before serving any client/peer traffic."),
    value("experimental-corrupt-check-time", "0s", "Duration of time between cluster corruption check passes."),
    value("experimental-enable-v2v3", "", "Serve v2 requests through the v3 backend under a given prefix."),
    value("experimental-backend-bbolt-freelist-type", "array", "Freelist type of the bbolt backend (keel has none)."),
    switch("experimental-enable-lease-checkpoint-persist", "false", "Persist lease remaining TTLs (requires --experimental-enable-lease-checkpoint)."),
    value("experimental-compaction-batch-limit", "1000", "Maximum revisions deleted in each compaction batch."),
    value("experimental-warning-apply-duration", "100ms", "Warning is generated if requests take more than this duration."),
    switch("unsafe-no-fsync", "false", "Disables fsync, unsafe, will cause data loss (keel always syncs)."),
    switch("version", "false", "Print the version and exit."),
    // Flags etcd 3.4 still accepts from older releases and ignores with a warning.
    switch("cluster-active-size", "", "Ignored (etcd 0.4)."),
    switch("cluster-remove-delay", "", "Ignored (etcd 0.4)."),
    switch("cluster-sync-interval", "", "Ignored (etcd 0.4)."),
    switch("config", "", "Ignored (etcd 0.4)."),
    switch("force", "", "Ignored (etcd 0.4)."),
    switch("max-result-buffer", "", "Ignored (etcd 0.4)."),
    switch("max-retry-attempts", "", "Ignored (etcd 0.4)."),
    switch("peer-heartbeat-interval", "", "Ignored (etcd 0.4)."),
    switch("peer-election-timeout", "", "Ignored (etcd 0.4)."),
    switch("retry-interval", "", "Ignored (etcd 0.4)."),
    switch("snapshot", "", "Ignored (etcd 0.4)."),
    switch("v", "", "Ignored (etcd 0.4)."),
    switch("vv", "", "Ignored (etcd 0.4)."),
];

/// Flags etcd 3.4 kept from 0.4 and ignores with a warning in any form and value.
const LEGACY: &[&str] = &[
    "cluster-active-size",
    "cluster-remove-delay",
    "cluster-sync-interval",
    "config",
    "force",
    "max-result-buffer",
    "max-retry-attempts",
    "peer-heartbeat-interval",
    "peer-election-timeout",
    "retry-interval",
    "snapshot",
    "v",
    "vv",
];

/// Flags keel accepts so that etcd's command lines start it, but cannot act on, with why.
/// Given with a value other than etcd's default, each logs one warning at start.
#[rustfmt::skip]
const IGNORED: &[(&str, &str)] = &[
    ("backend-batch-interval", "keel has no bbolt backend; applied writes are persisted with the WAL sync of their batch"),
    ("backend-batch-limit", "keel has no bbolt backend; applied writes are persisted with the WAL sync of their batch"),
    ("experimental-backend-bbolt-freelist-type", "keel has no bbolt backend"),
    ("experimental-compaction-batch-limit", "keel compacts its in-memory index in one step"),
    ("experimental-warning-apply-duration", "keel does not time individual applies"),
    ("experimental-enable-v2v3", "keel serves the v2 keys API from its own v2 store (--enable-v2), not through v3"),
    ("experimental-enable-lease-checkpoint-persist", "keel does not persist lease remaining TTLs"),
    ("enable-pprof", "keel has no Go runtime to profile"),
    ("metrics", "keel exports the same metrics at every level"),
    ("log-package-levels", "keel has no per-package log levels; use --log-level"),
    ("unsafe-no-fsync", "keel always syncs its WAL"),
    ("proxy-failure-wait", "keel has no v2 proxy"),
    ("proxy-refresh-interval", "keel has no v2 proxy"),
    ("proxy-dial-timeout", "keel has no v2 proxy"),
    ("proxy-write-timeout", "keel has no v2 proxy"),
    ("proxy-read-timeout", "keel has no v2 proxy"),
];

/// Why keel ignores `flag` (without `--`), if it is one keel accepts without acting on it.
pub fn ignored_reason(flag: &str) -> Option<&'static str> {
    IGNORED
        .iter()
        .find(|(name, _)| *name == flag)
        .map(|(_, why)| *why)
        .or_else(|| LEGACY.contains(&flag).then_some("etcd 3.4 ignores it too"))
}

/// Every flag keel accepts, by its long name without `--`.
pub fn flag_names() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.name)
}

fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// `--foo-bar` → `ETCD_FOO_BAR`, as etcd's `flags.FlagToEnv`.
pub fn env_var_name(flag: &str) -> String {
    format!("ETCD_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

/// Reads the process environment; hand this to [`parse`] outside tests.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command-line flag of this long name (without `--`).
    Flag(&'static str),
    /// This environment variable.
    Env(String),
    /// This key of the `--config-file` (`client-transport-security.cert-file` for a
    /// key of a block).
    File(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(name) => write!(f, "flag --{name}"),
            Origin::Env(var) => f.write_str(var),
            Origin::File(key) => write!(f, "config file key {key}"),
        }
    }
}

/// Why the configuration was rejected. Each displays as one line, except [`ConfigError::Help`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// `--help` was given: not a failure; print the text and exit 0.
    Help(String),
    /// A flag keel does not know.
    UnknownFlag(String),
    /// A bare word where a flag was expected (Go's flag parsing stops there; etcd refuses).
    NotAFlag(String),
    /// A command-line argument that is not UTF-8.
    NotUtf8(String),
    /// Any other command-line syntax error, as clap's first line.
    Usage(String),
    /// A value that does not convert or validate.
    InvalidValue {
        /// The value as given.
        value: String,
        /// The flag or variable it came from.
        origin: Origin,
        /// What is wrong with it.
        reason: String,
    },
    /// The `--config-file` cannot be read or is not YAML of the expected shape.
    ConfigFile(String),
    /// More than one of `--initial-cluster`, `--discovery`, `--discovery-srv`.
    ConflictingBootstrapFlags,
    /// `--listen-client-urls` set without `--advertise-client-urls`.
    AdvertiseClientUrlsRequired,
    /// `--heartbeat-interval` is 0.
    HeartbeatZero,
    /// `--election-timeout` is 0.
    ElectionZero,
    /// `--election-timeout` under five heartbeats (ms values).
    ElectionTooShort {
        /// `--election-timeout` in ms.
        election_ms: u64,
        /// `--heartbeat-interval` in ms.
        heartbeat_ms: u64,
    },
    /// `--election-timeout` above etcd's 50 s ceiling (ms).
    ElectionTooLong(u64),
    /// An https client URL without client cert and key and without `--auto-tls`.
    ClientTlsMissing(String),
    /// An https peer URL without peer cert and key and without `--peer-auto-tls`.
    PeerTlsMissing(String),
    /// A listen URL whose host is neither an IP address nor `localhost`.
    NotBindable(String),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Help(text) => f.write_str(text),
            ConfigError::UnknownFlag(flag) => write!(f, "unknown flag {flag}"),
            ConfigError::NotAFlag(word) => write!(f, "'{word}' is not a valid flag"),
            ConfigError::NotUtf8(arg) => write!(f, "argument {arg} is not valid UTF-8"),
            ConfigError::Usage(line) => f.write_str(line),
            ConfigError::InvalidValue { value, origin, reason } => {
                write!(f, "invalid value {value:?} for {origin}: {reason}")
            }
            ConfigError::ConfigFile(reason) => f.write_str(reason),
            ConfigError::ConflictingBootstrapFlags => f.write_str(
                "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\"",
            ),
            ConfigError::AdvertiseClientUrlsRequired => f.write_str(
                "--advertise-client-urls is required when --listen-client-urls is set explicitly",
            ),
            ConfigError::HeartbeatZero => f.write_str("--heartbeat-interval must be >0 (set to 0ms)"),
            ConfigError::ElectionZero => f.write_str("--election-timeout must be >0 (set to 0ms)"),
            ConfigError::ElectionTooShort { election_ms, heartbeat_ms } => write!(
                f,
                "--election-timeout[{election_ms}ms] should be at least as 5 times as --heartbeat-interval[{heartbeat_ms}ms]"
            ),
            ConfigError::ElectionTooLong(ms) => write!(
                f,
                "--election-timeout[{ms}ms] is too long, and should be set less than {MAX_ELECTION_MS}ms"
            ),
            ConfigError::ClientTlsMissing(url) => write!(
                f,
                "TLS key/cert (--cert-file, --key-file) must be provided for client url {url} with HTTPS scheme"
            ),
            ConfigError::PeerTlsMissing(url) => write!(
                f,
                "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url {url} with HTTPS scheme"
            ),
            ConfigError::NotBindable(url) => write!(f, "expected IP in URL for binding ({url})"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Bootstrap a new cluster.
    New,
    /// Join an existing cluster (the member was added with `member add`).
    Existing,
}

/// `--auto-compaction-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionMode {
    /// Keep a window of time.
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

/// `--auto-compaction-retention`, interpreted under the compaction mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompactionRetention {
    /// "0": no automatic compaction.
    Off,
    /// Periodic mode: keep this much history (a bare integer is hours).
    Period(Duration),
    /// Revision mode: keep this many revisions.
    Revisions(u64),
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// `debug`
    Debug,
    /// `info`
    Info,
    /// `warn`
    Warn,
    /// `error`
    Error,
    /// `panic`
    Panic,
    /// `fatal`
    Fatal,
}

/// `--logger`. Both are accepted; keel logs one way either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logger {
    /// etcd 3.4's deprecated default.
    Capnslog,
    /// Structured logging, etcd 3.5's default.
    Zap,
}

/// `--discovery-fallback`: what a member does when discovery finds the cluster full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryFallback {
    /// Run as a proxy (keel reports it unsupported when it gets there).
    Proxy,
    /// Exit.
    Exit,
}

/// TLS settings of one side (client or peer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--cert-file` / `--peer-cert-file`.
    pub cert_file: Option<PathBuf>,
    /// `--key-file` / `--peer-key-file`.
    pub key_file: Option<PathBuf>,
    /// `--trusted-ca-file` / `--peer-trusted-ca-file`.
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth` / `--peer-client-cert-auth`.
    pub client_cert_auth: bool,
    /// `--auto-tls` / `--peer-auto-tls`: generate a self-signed certificate.
    pub auto_tls: bool,
    /// `--client-crl-file` / `--peer-crl-file`: certificates it revokes are refused.
    pub crl_file: Option<PathBuf>,
    /// `--peer-cert-allowed-cn`: the common name the other end's certificate must carry.
    pub allowed_cn: Option<String>,
    /// `--client-cert-allowed-hostname` / `--peer-cert-allowed-hostname`: the host name
    /// (or IP) the other end's certificate must be valid for.
    pub allowed_hostname: Option<String>,
}

impl TlsConfig {
    /// Whether an https listener can be served: a cert and key, or auto TLS.
    pub fn can_serve_https(&self) -> bool {
        self.auto_tls || (self.cert_file.is_some() && self.key_file.is_some())
    }
}

/// The parsed and validated configuration of a keel member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// `--name`.
    pub name: String,
    /// `--data-dir` (default `<name>.keel`).
    pub data_dir: PathBuf,
    /// `--wal-dir`, if set.
    pub wal_dir: Option<PathBuf>,
    /// `--listen-client-urls`.
    pub listen_client_urls: Vec<String>,
    /// `--advertise-client-urls`.
    pub advertise_client_urls: Vec<String>,
    /// `--listen-peer-urls`.
    pub listen_peer_urls: Vec<String>,
    /// `--initial-advertise-peer-urls`.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--listen-metrics-urls` (empty: none).
    pub listen_metrics_urls: Vec<String>,
    /// `--initial-cluster`; when not given, `<name>=<url>` for each advertised peer URL,
    /// or empty when bootstrapping by `--discovery` / `--discovery-srv`.
    pub initial_cluster: String,
    /// `--initial-cluster-state`.
    pub initial_cluster_state: ClusterState,
    /// `--initial-cluster-token`.
    pub initial_cluster_token: String,
    /// `--heartbeat-interval`, ms.
    pub heartbeat_interval_ms: u64,
    /// `--election-timeout`, ms.
    pub election_timeout_ms: u64,
    /// `--initial-election-tick-advance`.
    pub initial_election_tick_advance: bool,
    /// `--snapshot-count`.
    pub snapshot_count: u64,
    /// `--max-snapshots` (0: unlimited).
    pub max_snapshots: u32,
    /// `--max-wals` (0: unlimited).
    pub max_wals: u32,
    /// `--quota-backend-bytes` as given (0: default, negative: no quota); see
    /// [`ServerConfig::quota_bytes`].
    pub quota_backend_bytes: i64,
    /// `--max-request-bytes`.
    pub max_request_bytes: u64,
    /// `--max-txn-ops`.
    pub max_txn_ops: u32,
    /// `--grpc-keepalive-min-time`.
    pub grpc_keepalive_min_time: Duration,
    /// `--experimental-watch-progress-notify-interval`.
    pub watch_progress_notify_interval: Duration,
    /// `--experimental-enable-lease-checkpoint`.
    pub lease_checkpoint: bool,
    /// `--experimental-lease-checkpoint-interval`.
    pub lease_checkpoint_interval: Duration,
    /// `--grpc-keepalive-interval` (zero: disabled).
    pub grpc_keepalive_interval: Duration,
    /// `--grpc-keepalive-timeout` (zero: disabled).
    pub grpc_keepalive_timeout: Duration,
    /// `--max-concurrent-streams` per client connection (0 given means unlimited, as in
    /// grpc-go, and is stored as `u32::MAX`).
    pub max_concurrent_streams: u32,
    /// `--cors`: origins answered with CORS headers on the client HTTP endpoints (`*`: any).
    pub cors: Vec<String>,
    /// `--host-whitelist`: Host names accepted on plain-http client endpoints (`*`: any).
    pub host_whitelist: Vec<String>,
    /// `--auto-compaction-mode`.
    pub auto_compaction_mode: CompactionMode,
    /// `--auto-compaction-retention`, interpreted under the mode.
    pub auto_compaction_retention: CompactionRetention,
    /// `--discovery`, if set.
    pub discovery: Option<String>,
    /// `--discovery-fallback`.
    pub discovery_fallback: DiscoveryFallback,
    /// `--discovery-proxy`, if set.
    pub discovery_proxy: Option<String>,
    /// `--discovery-srv`, if set.
    pub discovery_srv: Option<String>,
    /// `--discovery-srv-name`, if set.
    pub discovery_srv_name: Option<String>,
    /// `--force-new-cluster`: restart from the data dir as a one-member cluster, every
    /// other member removed (ignored when the data dir holds no WAL yet, as in etcd).
    pub force_new_cluster: bool,
    /// `--strict-reconfig-check`.
    pub strict_reconfig_check: bool,
    /// `--pre-vote`.
    pub pre_vote: bool,
    /// `--enable-v2`.
    pub enable_v2: bool,
    /// `--enable-grpc-gateway`.
    pub enable_grpc_gateway: bool,
    /// Client-side TLS flags.
    pub client_tls: TlsConfig,
    /// Peer-side TLS flags (`--peer-*`).
    pub peer_tls: TlsConfig,
    /// `--cipher-suites` (empty: the TLS library's defaults).
    pub cipher_suites: Vec<String>,
    /// `--tls-min-version`, if set.
    pub tls_min_version: Option<String>,
    /// `--auth-token` (e.g. `simple`, or `jwt,...`).
    pub auth_token: String,
    /// `--bcrypt-cost` (out-of-range values are replaced by 10, as etcd does, with a warning).
    pub bcrypt_cost: u32,
    /// `--auth-token-ttl`, seconds.
    pub auth_token_ttl_secs: u64,
    /// `--logger`.
    pub logger: Logger,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--log-outputs`: `default`, `stderr`, `stdout` or file paths.
    pub log_outputs: Vec<String>,
    /// `--enable-pprof`.
    pub enable_pprof: bool,
    /// `--experimental-initial-corrupt-check`: a restarting member compares its HashKV
    /// with its peers' before serving and refuses to start on a mismatch.
    pub initial_corrupt_check: bool,
    /// `--experimental-corrupt-check-time` (0: off): the leader's period for comparing
    /// its HashKV with every follower's, raising the CORRUPT alarm on a mismatch.
    pub corrupt_check_time: Duration,
    /// `--config-file` (or `ETCD_CONFIG_FILE`): every other setting came from this file.
    pub config_file: Option<PathBuf>,
    /// `--version`: print the version and exit.
    pub print_version: bool,
    /// Things worth logging at startup that etcd warns about or refuses (e.g. a flag
    /// shadowing its environment variable, which etcd treats as fatal).
    pub warnings: Vec<String>,
}

impl ServerConfig {
    /// The heartbeat interval (one raft tick).
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The election timeout.
    pub fn election_timeout(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms)
    }

    /// The election timeout in ticks, as etcd's `ElectionTicks` (at least 5 once validated).
    pub fn election_ticks(&self) -> u64 {
        self.election_timeout_ms / self.heartbeat_interval_ms.max(1)
    }

    /// Whether this member bootstraps a new cluster (`--initial-cluster-state new`).
    pub fn is_new_cluster(&self) -> bool {
        self.initial_cluster_state == ClusterState::New
    }

    /// The backend quota in bytes: `None` when disabled (negative flag), 2 GiB for 0.
    pub fn quota_bytes(&self) -> Option<u64> {
        match u64::try_from(self.quota_backend_bytes) {
            Err(_) => None,
            Ok(0) => Some(DEFAULT_QUOTA_BYTES),
            Ok(bytes) => Some(bytes),
        }
    }

    /// The socket addresses of `--listen-client-urls` (`localhost` is 127.0.0.1).
    pub fn listen_client_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        bind_addrs(&self.listen_client_urls)
    }

    /// The socket addresses of `--listen-peer-urls` (`localhost` is 127.0.0.1).
    pub fn listen_peer_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        bind_addrs(&self.listen_peer_urls)
    }

    /// The socket addresses of `--listen-metrics-urls` (`localhost` is 127.0.0.1).
    pub fn listen_metrics_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        bind_addrs(&self.listen_metrics_urls)
    }
}

/// One socket of `--listen-client-urls`. URLs naming the same host:port share it, as in
/// etcd: `http://` and `https://` on one port are told apart by their first bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSocket {
    /// Where it binds.
    pub addr: BindAddr,
    /// An `http://` or `unix://` URL names it.
    pub plain: bool,
    /// An `https://` or `unixs://` URL names it.
    pub secure: bool,
}

impl ServerConfig {
    /// The sockets of `--listen-client-urls`, one per distinct host:port, in order.
    pub fn listen_client_sockets(&self) -> Result<Vec<ClientSocket>, ConfigError> {
        client_sockets(&self.listen_client_urls)
    }

    /// The sockets of `--listen-metrics-urls`, as the client ones.
    pub fn listen_metrics_sockets(&self) -> Result<Vec<ClientSocket>, ConfigError> {
        client_sockets(&self.listen_metrics_urls)
    }

    /// Where each of `--listen-peer-urls` binds (TCP or a unix socket).
    pub fn listen_peer_binds(&self) -> Result<Vec<BindAddr>, ConfigError> {
        self.listen_peer_urls
            .iter()
            .map(|u| bind_target(u).ok_or_else(|| ConfigError::NotBindable(u.clone())))
            .collect()
    }
}

/// One socket per distinct host:port of `urls`, in order: http and https URLs naming
/// the same address share it.
fn client_sockets(urls: &[String]) -> Result<Vec<ClientSocket>, ConfigError> {
    let mut out: Vec<(String, ClientSocket)> = Vec::new();
    for url in urls {
        let addr = bind_target(url).ok_or_else(|| ConfigError::NotBindable(url.clone()))?;
        // etcd keys its listeners by the URL's address text, not the resolved one.
        let key = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let secure = is_secure_url(url);
        match out.iter_mut().find(|(k, _)| k == key) {
            Some((_, s)) => {
                s.secure |= secure;
                s.plain |= !secure;
            }
            None => out.push((
                key.to_string(),
                ClientSocket {
                    addr,
                    plain: !secure,
                    secure,
                },
            )),
        }
    }
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

/// Where a checked listen URL binds: its socket address, or for `unix(s)://host:port`
/// the socket file `host:port` (relative to the working directory, as etcd).
pub fn bind_target(url: &str) -> Option<BindAddr> {
    match unix_path(url) {
        Some(p) => Some(BindAddr::Unix(p)),
        None => bind_addr(url).map(BindAddr::Tcp),
    }
}

fn bind_addrs(urls: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    urls.iter()
        .map(|u| bind_addr(u).ok_or_else(|| ConfigError::NotBindable(u.clone())))
        .collect()
}

/// The address to bind for an already checked `http(s)://host:port` URL, or `None` when
/// the host is a name other than `localhost` (etcd binds IP literals only).
fn bind_addr(url: &str) -> Option<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (host, port) = rest.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ip = if host == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse().ok()?
    };
    Some(SocketAddr::new(ip, port))
}

/// Parses etcd's flags (`args` starts with the program name, as `std::env::args_os()`)
/// and, for flags not on the command line, the `ETCD_*` variables looked up through `env`.
///
/// A flag beats its variable (etcd 3.4 refuses to start instead; keel records a warning).
/// Variables that match no flag are never looked up, so they are ignored.
pub fn parse<I, T>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ServerConfig, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args = go_style_args(args)?;
    let matches = command().try_get_matches_from(&args).map_err(clap_error)?;
    let mut raw = Raw::gather(&matches, env);
    // etcd reads ETCD_CONFIG_FILE even though the file then shadows every other variable.
    if let Some(path) = raw.optional("config-file") {
        raw = Raw::from_file(PathBuf::from(path), &matches)?;
    }
    raw.into_config()
}

/// Converts to strings and rewrites Go's single-dash flags (`-name x`, `-name=x`) to clap's
/// `--name`, leaving values (the word after a value flag) and everything after `--` alone.
fn go_style_args<I, T>(args: I) -> Result<Vec<String>, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out = Vec::new();
    let mut next_is_value = false;
    let mut after_terminator = false;
    for (i, arg) in args.into_iter().enumerate() {
        let arg = arg
            .into()
            .into_string()
            .map_err(|bad| ConfigError::NotUtf8(format!("{bad:?}")))?;
        if i == 0 || after_terminator || next_is_value {
            next_is_value = false;
            out.push(arg);
            continue;
        }
        if arg == "--" {
            after_terminator = true;
            out.push(arg);
            continue;
        }
        let body = match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
            Some(body) if !body.is_empty() => body,
            _ => {
                out.push(arg);
                continue;
            }
        };
        let (name, has_value) = match body.split_once('=') {
            Some((name, _)) => (name, true),
            None => (body, false),
        };
        next_is_value = !has_value && spec(name).is_some_and(|s| s.kind == Kind::Value);
        // `-h` stays clap's short help; every other single-dash flag gains a dash.
        let normalized = if arg.starts_with("--") || body == "h" {
            arg.clone()
        } else {
            format!("-{arg}")
        };
        out.push(normalized);
    }
    Ok(out)
}

fn command() -> Command {
    let mut cmd = Command::new("keel")
        .about("Keel: an etcd v3 compatible key-value store member. Every --foo-bar flag may also be set as ETCD_FOO_BAR.")
        .disable_version_flag(true)
        // Go's flag package lets a repeated flag override the earlier one.
        .args_override_self(true);
    for s in SPECS {
        let help = if s.default.is_empty() {
            s.help.to_owned()
        } else {
            format!("{} [default: {}]", s.help, s.default)
        };
        let arg = Arg::new(s.name)
            .long(s.name)
            .help(help)
            .action(ArgAction::Set);
        let arg = match s.kind {
            // Go takes the next word as the value whatever it looks like.
            Kind::Value => arg.value_name("VALUE").allow_hyphen_values(true),
            // Go booleans: `--flag` or `--flag=<bool>`; `--flag false` leaves `false` a stray word.
            Kind::Bool => arg
                .value_name("BOOL")
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true"),
        };
        cmd = cmd.arg(arg);
    }
    cmd
}

fn clap_error(err: clap::Error) -> ConfigError {
    let invalid_arg = || match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            ConfigError::Help(err.render().to_string())
        }
        ErrorKind::UnknownArgument => match invalid_arg() {
            Some(arg) if arg.starts_with('-') => {
                let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
                ConfigError::UnknownFlag(flag.to_owned())
            }
            Some(word) => ConfigError::NotAFlag(word),
            None => ConfigError::Usage(first_line(&err)),
        },
        _ => ConfigError::Usage(first_line(&err)),
    }
}

fn first_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let line = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// One value as given, with its origin.
#[derive(Clone)]
struct Given {
    value: String,
    origin: Origin,
}

/// The string value of every flag given on the command line or through the environment.
struct Raw {
    given: HashMap<&'static str, Given>,
    warnings: Vec<String>,
    /// The config file everything came from, if one was given.
    file: Option<PathBuf>,
}

impl Raw {
    fn gather(matches: &ArgMatches, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut given = HashMap::new();
        let mut warnings = Vec::new();
        for s in SPECS {
            let var = env_var_name(s.name);
            // etcd treats an empty variable as unset.
            let from_env = env(&var).filter(|v| !v.is_empty());
            let on_command_line = matches.value_source(s.name) == Some(ValueSource::CommandLine);
            match (on_command_line, from_env) {
                (true, env_value) => {
                    if env_value.is_some() {
                        warnings.push(format!(
                            "environment variable {var} is ignored: the --{} flag is set",
                            s.name
                        ));
                    }
                    if let Some(value) = matches.get_one::<String>(s.name) {
                        given.insert(
                            s.name,
                            Given {
                                value: value.clone(),
                                origin: Origin::Flag(s.name),
                            },
                        );
                    }
                }
                (false, Some(value)) => {
                    given.insert(
                        s.name,
                        Given {
                            value,
                            origin: Origin::Env(var),
                        },
                    );
                }
                (false, None) => {}
            }
        }
        Raw {
            given,
            warnings,
            file: None,
        }
    }

    /// The settings of a config file, as etcd 3.4's `configFromFile`: command-line flags
    /// and variables are ignored, except `--version`, which etcd acts on before reading it.
    fn from_file(path: PathBuf, matches: &ArgMatches) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(&path).map_err(|e| {
            // Go's wording, which etcd prints: "open <path>: no such file or directory".
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            };
            ConfigError::ConfigFile(format!("open {}: {why}", path.display()))
        })?;
        let values = config_file::from_yaml(&text).map_err(|e| {
            ConfigError::ConfigFile(format!("error reading config file {}: {e}", path.display()))
        })?;
        let mut given = HashMap::new();
        for (key, name, value) in values.settings {
            if let Some(s) = spec(&name) {
                given.insert(
                    s.name,
                    Given {
                        value,
                        origin: Origin::File(key),
                    },
                );
            }
        }
        if matches.value_source("version") == Some(ValueSource::CommandLine) {
            if let Some(v) = matches.get_one::<String>("version") {
                given.insert(
                    "version",
                    Given {
                        value: v.clone(),
                        origin: Origin::Flag("version"),
                    },
                );
            }
        }
        Ok(Raw {
            given,
            warnings: values.warnings,
            file: Some(path),
        })
    }

    fn is_set(&self, name: &str) -> bool {
        self.given.contains_key(name)
    }

    /// The value given, or the table default (which always converts).
    fn get(&self, name: &'static str) -> Given {
        self.given.get(name).cloned().unwrap_or_else(|| Given {
            value: spec(name).map_or("", |s| s.default).to_owned(),
            origin: Origin::Flag(name),
        })
    }

    fn string(&self, name: &'static str) -> String {
        self.get(name).value
    }

    fn optional(&self, name: &'static str) -> Option<String> {
        Some(self.get(name).value).filter(|v| !v.is_empty())
    }

    fn path(&self, name: &'static str) -> Option<PathBuf> {
        self.optional(name).map(PathBuf::from)
    }

    fn bool(&self, name: &'static str) -> Result<bool, ConfigError> {
        let g = self.get(name);
        parse_go_bool(&g.value).ok_or_else(|| g.invalid("expected a boolean (true or false)"))
    }

    fn uint<N: TryFrom<u64>>(&self, name: &'static str) -> Result<N, ConfigError> {
        let g = self.get(name);
        g.value
            .parse::<u64>()
            .ok()
            .filter(|_| g.value.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| N::try_from(n).ok())
            .ok_or_else(|| g.invalid("expected a non-negative integer"))
    }

    fn int(&self, name: &'static str) -> Result<i64, ConfigError> {
        let g = self.get(name);
        g.value
            .parse::<i64>()
            .map_err(|_| g.invalid("expected an integer"))
    }

    fn duration(&self, name: &'static str) -> Result<Duration, ConfigError> {
        let g = self.get(name);
        parse_go_duration(&g.value).map_err(|reason| g.invalid(reason))
    }

    fn choice<T: Copy>(&self, name: &'static str, options: &[(&str, T)]) -> Result<T, ConfigError> {
        let g = self.get(name);
        options
            .iter()
            .find(|(word, _)| *word == g.value)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let words: Vec<&str> = options.iter().map(|(w, _)| *w).collect();
                g.invalid(format!("valid values are {}", words.join(", ")))
            })
    }

    fn list(&self, name: &'static str) -> Vec<String> {
        split_list(&self.get(name).value)
    }

    /// A comma-separated URL list; `bind` additionally requires IP or `localhost` hosts.
    fn urls(
        &self,
        name: &'static str,
        required: bool,
        bind: bool,
    ) -> Result<Vec<String>, ConfigError> {
        let g = self.get(name);
        let urls = split_list(&g.value);
        if required && urls.is_empty() {
            return Err(g.invalid("no valid URLs given"));
        }
        for url in &urls {
            check_url(url).map_err(|e| g.invalid(e.to_string()))?;
            if bind && bind_target(url).is_none() {
                return Err(g.invalid(ConfigError::NotBindable(url.clone()).to_string()));
            }
        }
        Ok(urls)
    }

    fn into_config(mut self) -> Result<ServerConfig, ConfigError> {
        self.proxy_off()?;
        self.lease_checkpoint_persist()?;
        self.warn_ignored();
        let name = self.string("name");
        let data_dir = self
            .path("data-dir")
            .unwrap_or_else(|| PathBuf::from(format!("{name}.keel")));
        let listen_peer_urls = self.urls("listen-peer-urls", true, true)?;
        let listen_client_urls = self.urls("listen-client-urls", true, true)?;
        let listen_metrics_urls = self.urls("listen-metrics-urls", false, true)?;
        let initial_advertise_peer_urls = self.urls("initial-advertise-peer-urls", true, false)?;
        let advertise_client_urls = self.urls("advertise-client-urls", true, false)?;
        let discovery = self.optional("discovery");
        let discovery_srv = self.optional("discovery-srv");
        let initial_cluster = self.initial_cluster(
            &name,
            &initial_advertise_peer_urls,
            &discovery,
            &discovery_srv,
        )?;
        let initial_cluster_state = self.choice(
            "initial-cluster-state",
            &[
                ("new", ClusterState::New),
                ("existing", ClusterState::Existing),
            ],
        )?;
        let heartbeat_interval_ms = self.uint("heartbeat-interval")?;
        let election_timeout_ms = self.uint("election-timeout")?;
        let auto_compaction_mode = self.choice(
            "auto-compaction-mode",
            &[
                ("periodic", CompactionMode::Periodic),
                ("revision", CompactionMode::Revision),
            ],
        )?;
        let auto_compaction_retention = self.retention(auto_compaction_mode)?;
        let bcrypt_cost = self.bcrypt_cost()?;
        let config = ServerConfig {
            data_dir,
            wal_dir: self.path("wal-dir"),
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            listen_metrics_urls,
            initial_cluster,
            initial_cluster_state,
            initial_cluster_token: self.string("initial-cluster-token"),
            heartbeat_interval_ms,
            election_timeout_ms,
            initial_election_tick_advance: self.bool("initial-election-tick-advance")?,
            snapshot_count: self.uint("snapshot-count")?,
            max_snapshots: self.uint("max-snapshots")?,
            max_wals: self.uint("max-wals")?,
            quota_backend_bytes: self.int("quota-backend-bytes")?,
            max_request_bytes: self.uint("max-request-bytes")?,
            max_txn_ops: self.uint("max-txn-ops")?,
            grpc_keepalive_min_time: self.duration("grpc-keepalive-min-time")?,
            watch_progress_notify_interval: self
                .duration("experimental-watch-progress-notify-interval")?,
            lease_checkpoint: self.bool("experimental-enable-lease-checkpoint")?,
            lease_checkpoint_interval: self.duration("experimental-lease-checkpoint-interval")?,
            grpc_keepalive_interval: self.duration("grpc-keepalive-interval")?,
            grpc_keepalive_timeout: self.duration("grpc-keepalive-timeout")?,
            max_concurrent_streams: match self.uint("max-concurrent-streams")? {
                0 => u32::MAX,
                n => n,
            },
            cors: self.cors()?,
            host_whitelist: self.list("host-whitelist"),
            auto_compaction_mode,
            auto_compaction_retention,
            discovery,
            discovery_fallback: self.choice(
                "discovery-fallback",
                &[
                    ("proxy", DiscoveryFallback::Proxy),
                    ("exit", DiscoveryFallback::Exit),
                ],
            )?,
            discovery_proxy: self.optional("discovery-proxy"),
            discovery_srv,
            discovery_srv_name: self.optional("discovery-srv-name"),
            force_new_cluster: self.bool("force-new-cluster")?,
            strict_reconfig_check: self.bool("strict-reconfig-check")?,
            pre_vote: self.bool("pre-vote")?,
            enable_v2: self.bool("enable-v2")?,
            enable_grpc_gateway: self.bool("enable-grpc-gateway")?,
            client_tls: TlsConfig {
                cert_file: self.path("cert-file"),
                key_file: self.path("key-file"),
                trusted_ca_file: self.path("trusted-ca-file"),
                client_cert_auth: self.bool("client-cert-auth")?,
                auto_tls: self.bool("auto-tls")?,
                crl_file: self.path("client-crl-file"),
                allowed_cn: None,
                allowed_hostname: self.optional("client-cert-allowed-hostname"),
            },
            peer_tls: TlsConfig {
                cert_file: self.path("peer-cert-file"),
                key_file: self.path("peer-key-file"),
                trusted_ca_file: self.path("peer-trusted-ca-file"),
                client_cert_auth: self.bool("peer-client-cert-auth")?,
                auto_tls: self.bool("peer-auto-tls")?,
                crl_file: self.path("peer-crl-file"),
                allowed_cn: self.optional("peer-cert-allowed-cn"),
                allowed_hostname: self.optional("peer-cert-allowed-hostname"),
            },
            cipher_suites: self.list("cipher-suites"),
            tls_min_version: self.optional("tls-min-version"),
            auth_token: self.string("auth-token"),
            bcrypt_cost,
            auth_token_ttl_secs: self.uint("auth-token-ttl")?,
            logger: self.choice(
                "logger",
                &[("zap", Logger::Zap), ("capnslog", Logger::Capnslog)],
            )?,
            log_level: if self.bool("debug")? {
                LogLevel::Debug
            } else {
                self.choice(
                    "log-level",
                    &[
                        ("debug", LogLevel::Debug),
                        ("info", LogLevel::Info),
                        ("warn", LogLevel::Warn),
                        ("error", LogLevel::Error),
                        ("panic", LogLevel::Panic),
                        ("fatal", LogLevel::Fatal),
                    ],
                )?
            },
            log_outputs: self.log_outputs(),
            enable_pprof: self.bool("enable-pprof")?,
            initial_corrupt_check: self.bool("experimental-initial-corrupt-check")?,
            corrupt_check_time: self.duration("experimental-corrupt-check-time")?,
            config_file: self.file.clone(),
            print_version: self.bool("version")?,
            warnings: std::mem::take(&mut self.warnings),
            name,
        };
        self.cross_checks(&config)?;
        Ok(config)
    }

    /// The explicit `--initial-cluster`, else etcd's default derived from the name and
    /// advertised peer URLs, which etcd drops when another bootstrap method is chosen.
    fn initial_cluster(
        &self,
        name: &str,
        advertise_peer_urls: &[String],
        discovery: &Option<String>,
        discovery_srv: &Option<String>,
    ) -> Result<String, ConfigError> {
        let explicit = self.optional("initial-cluster");
        let methods = [
            explicit.is_some(),
            discovery.is_some(),
            discovery_srv.is_some(),
        ];
        if methods.iter().filter(|set| **set).count() > 1 {
            return Err(ConfigError::ConflictingBootstrapFlags);
        }
        if let Some(cluster) = explicit {
            InitialCluster::parse(&cluster)
                .map_err(|e| self.get("initial-cluster").invalid(e.to_string()))?;
            return Ok(cluster);
        }
        if discovery.is_some() || discovery_srv.is_some() {
            return Ok(String::new());
        }
        let name = if name.is_empty() { "default" } else { name };
        let pairs: Vec<String> = advertise_peer_urls
            .iter()
            .map(|u| format!("{name}={u}"))
            .collect();
        Ok(pairs.join(","))
    }

    /// etcd's `parseCompactionRetention`: a bare integer is hours (periodic) or revisions;
    /// otherwise a Go duration, which only makes sense for periodic mode.
    fn retention(&self, mode: CompactionMode) -> Result<CompactionRetention, ConfigError> {
        let g = self.get("auto-compaction-retention");
        let integer = g
            .value
            .parse::<u64>()
            .ok()
            .filter(|_| g.value.bytes().all(|b| b.is_ascii_digit()));
        let retention = match (mode, integer) {
            (_, Some(0)) => CompactionRetention::Off,
            (CompactionMode::Revision, Some(n)) => CompactionRetention::Revisions(n),
            (CompactionMode::Revision, None) => {
                return Err(g.invalid("revision mode takes a number of revisions"));
            }
            (CompactionMode::Periodic, Some(hours)) => {
                CompactionRetention::Period(Duration::from_secs(hours.saturating_mul(3600)))
            }
            (CompactionMode::Periodic, None) => {
                let d = parse_go_duration(&g.value)
                    .map_err(|e| g.invalid(format!("error parsing CompactionRetention: {e}")))?;
                if d.is_zero() {
                    CompactionRetention::Off
                } else {
                    CompactionRetention::Period(d)
                }
            }
        };
        Ok(retention)
    }

    /// `--proxy`: etcd's v2 proxy modes are not implemented; starting a member instead
    /// would bootstrap a cluster where the operator asked for a proxy, so refuse.
    fn proxy_off(&self) -> Result<(), ConfigError> {
        let mode = self.choice("proxy", &[("off", 0), ("readonly", 1), ("on", 2)])?;
        if mode != 0 {
            return Err(self
                .get("proxy")
                .invalid("keel does not implement etcd's v2 proxy; only 'off' is supported"));
        }
        Ok(())
    }

    /// etcd's `Config.Validate`: persisting checkpoints needs checkpoints.
    fn lease_checkpoint_persist(&self) -> Result<(), ConfigError> {
        if self.bool("experimental-enable-lease-checkpoint-persist")?
            && !self.bool("experimental-enable-lease-checkpoint")?
        {
            return Err(ConfigError::Usage(
                "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint".into(),
            ));
        }
        Ok(())
    }

    /// One warning per flag keel accepts but ignores, when it asks for something other
    /// than etcd's default (a default value changes nothing, so says nothing).
    fn warn_ignored(&mut self) {
        for s in SPECS {
            if !self.is_set(s.name) {
                continue;
            }
            if LEGACY.contains(&s.name) {
                // etcd's own words for these.
                self.warnings.push(format!(
                    "flag \"-{}\" is no longer supported - ignoring.",
                    s.name
                ));
                continue;
            }
            let Some(why) = ignored_reason(s.name) else {
                continue;
            };
            let given = self.get(s.name);
            let default = s.default;
            let same = match s.kind {
                Kind::Bool => parse_go_bool(&given.value) == parse_go_bool(default),
                Kind::Value => {
                    given.value == default
                        || matches!(
                            (parse_go_duration(&given.value), parse_go_duration(default)),
                            (Ok(a), Ok(b)) if a == b
                        )
                }
            };
            if !same {
                self.warnings
                    .push(format!("--{} is accepted but ignored: {why}", s.name));
            }
        }
    }

    /// `--cors`: `*` or origins, each a URL with a port as etcd's `types.NewURLs` wants.
    fn cors(&self) -> Result<Vec<String>, ConfigError> {
        let g = self.get("cors");
        let origins = split_list(&g.value);
        for o in origins.iter().filter(|o| *o != "*") {
            check_url(o).map_err(|e| g.invalid(e.to_string()))?;
        }
        Ok(origins)
    }

    /// `--log-outputs`, or the deprecated `--log-output` when only that one is given.
    fn log_outputs(&self) -> Vec<String> {
        if !self.is_set("log-outputs") && self.is_set("log-output") {
            return self.list("log-output");
        }
        self.list("log-outputs")
    }

    /// etcd keeps going with the default cost when the flag is outside bcrypt's range.
    fn bcrypt_cost(&mut self) -> Result<u32, ConfigError> {
        let cost: u32 = self.uint("bcrypt-cost")?;
        if (4..=31).contains(&cost) {
            return Ok(cost);
        }
        self.warnings.push(format!(
            "Use default bcrypt-cost 10 instead of the invalid value {cost}"
        ));
        Ok(10)
    }

    /// etcd's `Config.Validate` checks that span several flags, then the TLS requirement
    /// etcd hits when it opens the listeners.
    fn cross_checks(&self, c: &ServerConfig) -> Result<(), ConfigError> {
        if c.heartbeat_interval_ms == 0 {
            return Err(ConfigError::HeartbeatZero);
        }
        if c.election_timeout_ms == 0 {
            return Err(ConfigError::ElectionZero);
        }
        if c.heartbeat_interval_ms.saturating_mul(5) > c.election_timeout_ms {
            return Err(ConfigError::ElectionTooShort {
                election_ms: c.election_timeout_ms,
                heartbeat_ms: c.heartbeat_interval_ms,
            });
        }
        if c.election_timeout_ms > MAX_ELECTION_MS {
            return Err(ConfigError::ElectionTooLong(c.election_timeout_ms));
        }
        // A config file keeps the default advertised URL instead (etcd's configFromFile).
        if self.file.is_none()
            && self.is_set("listen-client-urls")
            && !self.is_set("advertise-client-urls")
        {
            return Err(ConfigError::AdvertiseClientUrlsRequired);
        }
        if !c.client_tls.can_serve_https() {
            if let Some(url) = c.listen_client_urls.iter().find(|u| is_secure_url(u)) {
                return Err(ConfigError::ClientTlsMissing(url.clone()));
            }
        }
        if !c.peer_tls.can_serve_https() {
            if let Some(url) = c.listen_peer_urls.iter().find(|u| is_secure_url(u)) {
                return Err(ConfigError::PeerTlsMissing(url.clone()));
            }
        }
        Ok(())
    }
}

impl Given {
    fn invalid(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::InvalidValue {
            value: self.value.clone(),
            origin: self.origin.clone(),
            reason: reason.into(),
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Go's `strconv.ParseBool`, which etcd uses for boolean flags and their variables.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}
