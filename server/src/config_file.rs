//! `--config-file`: etcd 3.4's YAML configuration (embed/config.go `configYAML` and
//! etcdmain/config.go `configProxy`), turned into the same flag-name → string values the
//! command line gives, so one conversion and one set of checks serve both.
//!
//! The keys are the flag names. etcd decodes the file into typed Go fields, so it wants
//! booleans as YAML booleans, numbers as numbers, durations as integer nanoseconds,
//! `cipher-suites` and `log-outputs` as YAML lists and URL lists as comma-separated
//! strings; keel takes each of those, and also the other spelling where one is obvious
//! (a Go duration string, a list where a comma-separated string is expected), since
//! being lenient cannot break a file etcd accepts. TLS lives in two blocks,
//! `client-transport-security:` and `peer-transport-security:`, with `cert-file`,
//! `key-file`, `client-cert-auth`, `trusted-ca-file` and `auto-tls`. Keys etcd 3.4 does
//! not read from a file (the CRL and allowed-CN flags, unknown keys) are ignored as etcd
//! ignores them, with a warning each, since a silently ignored setting is worse.

use yaml_rust2::{Yaml, YamlLoader};

/// What a config file sets, and what it says that keel will not act on.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileSettings {
    /// (key as written, flag name, value) for each key set to something non-empty.
    pub settings: Vec<(String, String, String)>,
    /// One line per key that is ignored.
    pub warnings: Vec<String>,
}

/// Top-level keys etcd 3.4 reads from a file, each the name of the flag it sets.
#[rustfmt::skip]
const KEYS: &[&str] = &[
    "name", "data-dir", "wal-dir", "snapshot-count", "max-snapshots", "max-wals",
    "heartbeat-interval", "election-timeout", "initial-election-tick-advance",
    "backend-batch-interval", "backend-batch-limit", "quota-backend-bytes", "max-txn-ops",
    "max-request-bytes", "max-concurrent-streams", "cipher-suites", "initial-cluster-state",
    "discovery-srv", "discovery-srv-name", "discovery-proxy", "discovery", "initial-cluster",
    "initial-cluster-token", "strict-reconfig-check", "enable-v2", "auto-compaction-mode",
    "auto-compaction-retention", "grpc-keepalive-min-time", "grpc-keepalive-interval",
    "grpc-keepalive-timeout", "pre-vote", "auth-token", "bcrypt-cost", "auth-token-ttl",
    "experimental-initial-corrupt-check", "experimental-corrupt-check-time",
    "experimental-enable-v2v3", "experimental-backend-bbolt-freelist-type",
    "experimental-enable-lease-checkpoint", "experimental-enable-lease-checkpoint-persist",
    "experimental-compaction-batch-limit", "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration", "force-new-cluster", "enable-pprof", "metrics",
    "listen-metrics-urls", "logger", "log-level", "log-outputs", "enable-grpc-gateway",
    "log-output", "debug", "log-package-levels", "unsafe-no-fsync", "listen-peer-urls",
    "listen-client-urls", "initial-advertise-peer-urls", "advertise-client-urls", "cors",
    "host-whitelist", "proxy", "proxy-failure-wait", "proxy-refresh-interval",
    "proxy-dial-timeout", "proxy-write-timeout", "proxy-read-timeout", "discovery-fallback",
    // etcd 3.5's key; keel has the flag.
    "tls-min-version",
];

/// Keys whose Go type is `time.Duration`: a YAML integer is nanoseconds.
const DURATIONS: &[&str] = &[
    "backend-batch-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
    "experimental-corrupt-check-time",
    "experimental-watch-progress-notify-interval",
    "experimental-warning-apply-duration",
];

/// The keys of a `*-transport-security` block, each with the flag it sets on the client
/// side; the peer side's flag is the same with `peer-` in front.
const BLOCK_KEYS: &[&str] = &[
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
];

/// Reads the settings of a YAML config file. An error is one line (YAML errors carry
/// their line and column).
pub fn from_yaml(text: &str) -> Result<FileSettings, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut out = FileSettings::default();
    let top = match docs.into_iter().next() {
        None | Some(Yaml::Null) => return Ok(out),
        Some(Yaml::Hash(h)) => h,
        Some(_) => return Err("the config file is not a YAML mapping of settings".into()),
    };
    for (k, v) in top {
        let Some(key) = k.as_str().map(str::to_owned) else {
            return Err(format!("config file key {k:?} is not a string"));
        };
        let side = match key.as_str() {
            "client-transport-security" => Some(""),
            "peer-transport-security" => Some("peer-"),
            _ => None,
        };
        if let Some(prefix) = side {
            block(&key, prefix, v, &mut out)?;
        } else if KEYS.contains(&key.as_str()) {
            if let Some(value) = scalar(&key, &v, DURATIONS.contains(&key.as_str()))? {
                out.settings.push((key.clone(), key, value));
            }
        } else {
            out.warnings.push(format!(
                "config file key {key:?} is ignored: etcd 3.4 does not read it from a config file"
            ));
        }
    }
    Ok(out)
}

fn block(key: &str, prefix: &str, v: Yaml, out: &mut FileSettings) -> Result<(), String> {
    let h = match v {
        Yaml::Null => return Ok(()),
        Yaml::Hash(h) => h,
        _ => return Err(format!("config file key {key} must be a mapping")),
    };
    for (k, v) in h {
        let Some(inner) = k.as_str() else {
            return Err(format!("config file key {key}.{k:?} is not a string"));
        };
        let full = format!("{key}.{inner}");
        if !BLOCK_KEYS.contains(&inner) {
            out.warnings.push(format!(
                "config file key {full:?} is ignored: etcd 3.4 does not read it from a config file"
            ));
            continue;
        }
        if let Some(value) = scalar(&full, &v, false)? {
            out.settings.push((full, format!("{prefix}{inner}"), value));
        }
    }
    Ok(())
}

/// A value as the command line would spell it; `None` for null or empty (the default
/// stays, as in etcd where a null leaves the field alone).
fn scalar(key: &str, v: &Yaml, duration: bool) -> Result<Option<String>, String> {
    let s = match v {
        Yaml::Null => return Ok(None),
        Yaml::String(s) => s.clone(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Integer(n) if duration => format!("{n}ns"),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Real(r) => r.clone(),
        Yaml::Array(items) => {
            let mut parts = Vec::new();
            for item in items {
                match scalar(key, item, duration)? {
                    Some(p) => parts.push(p),
                    None => continue,
                }
            }
            parts.join(",")
        }
        Yaml::Hash(_) | Yaml::Alias(_) | Yaml::BadValue => {
            return Err(format!(
                "config file key {key} must be a single value or a list"
            ))
        }
    };
    Ok(Some(s).filter(|s| !s.is_empty()))
}
