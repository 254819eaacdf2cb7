//! Every flag of `etcd --help` (3.4.23, committed in tests/data) starts keel: each parses
//! with a plausible value and lands in its class — honoured (no warning) or accepted
//! but ignored (one warning line naming it and why). Then the flags keel newly honours
//! land in their fields.

use std::collections::HashMap;
use std::time::Duration;

use keel_server::config::{flag_names, ignored_reason, parse, ConfigError, LogLevel, ServerConfig};

const HELP: &str = include_str!("data/etcd-3.4.23-help.txt");

fn parse_args(args: &[&str]) -> Result<ServerConfig, ConfigError> {
    parse(std::iter::once("keel").chain(args.iter().copied()), &|_| {
        None
    })
}

/// Flags keel accepts but ignores: given something else than etcd's default, each warns.
const WARNED: &[&str] = &[
    "backend-batch-interval",
    "backend-batch-limit",
    "enable-pprof",
    "metrics",
    "proxy-failure-wait",
    "proxy-refresh-interval",
    "proxy-dial-timeout",
    "proxy-write-timeout",
    "proxy-read-timeout",
    "experimental-enable-v2v3",
    "experimental-backend-bbolt-freelist-type",
    "experimental-compaction-batch-limit",
    "experimental-warning-apply-duration",
    "log-package-levels",
];

/// Flags whose behaviour another part of keel owns and which may warn while it is
/// missing; this test only requires that they parse.
const NOT_JUDGED_HERE: &[&str] = &["experimental-initial-corrupt-check"];

/// Every `--flag` etcd's help names, with its default as the help prints it.
fn help_flags() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in HELP.lines().filter(|l| !l.starts_with('#')) {
        let t = line.trim_start();
        let t = t.strip_prefix("etcd ").unwrap_or(t);
        let Some(rest) = t.strip_prefix("--") else {
            continue;
        };
        let (name, default) = rest.split_once(' ').unwrap_or((rest, ""));
        if name == "help"
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            continue;
        }
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_string(), default.trim_matches('\'').to_string()));
        }
    }
    out
}

/// A plausible non-default value for the non-boolean flags, and companions some need.
fn plausible(dir: &std::path::Path) -> HashMap<&'static str, Vec<String>> {
    let file = dir.join("etcd.conf.yml");
    std::fs::write(&file, "name: from-file\n").expect("write config");
    let v = |flag: &str, value: &str| vec![format!("--{flag}={value}")];
    let mut m: HashMap<&'static str, Vec<String>> = HashMap::new();
    for (flag, value) in [
        ("name", "n1"),
        ("data-dir", "/tmp/keel-x"),
        ("wal-dir", "/tmp/keel-wal"),
        ("snapshot-count", "10000"),
        ("heartbeat-interval", "50"),
        ("election-timeout", "2000"),
        ("listen-peer-urls", "http://127.0.0.1:7180"),
        ("max-snapshots", "3"),
        ("max-wals", "3"),
        ("quota-backend-bytes", "8589934592"),
        ("backend-batch-interval", "10ms"),
        ("backend-batch-limit", "100"),
        ("max-txn-ops", "256"),
        ("max-request-bytes", "10485760"),
        ("max-concurrent-streams", "100"),
        ("grpc-keepalive-min-time", "10s"),
        ("grpc-keepalive-interval", "1h"),
        ("grpc-keepalive-timeout", "10s"),
        ("initial-advertise-peer-urls", "http://127.0.0.1:7180"),
        (
            "initial-cluster",
            "default=http://localhost:2380,b=http://127.0.0.1:7181",
        ),
        ("initial-cluster-state", "existing"),
        ("initial-cluster-token", "tok"),
        ("advertise-client-urls", "http://127.0.0.1:7179"),
        ("discovery", "https://discovery.etcd.io/abc"),
        ("discovery-fallback", "exit"),
        ("discovery-proxy", "http://127.0.0.1:3128"),
        ("discovery-srv", "example.com"),
        ("discovery-srv-name", "x"),
        ("auto-compaction-retention", "1h"),
        ("auto-compaction-mode", "revision"),
        ("cert-file", "/tmp/c.pem"),
        ("key-file", "/tmp/k.pem"),
        ("client-crl-file", "/tmp/client.crl"),
        ("client-cert-allowed-hostname", "client.example.com"),
        ("trusted-ca-file", "/tmp/ca.pem"),
        ("peer-cert-file", "/tmp/pc.pem"),
        ("peer-key-file", "/tmp/pk.pem"),
        ("peer-trusted-ca-file", "/tmp/pca.pem"),
        ("peer-cert-allowed-cn", "etcd-peer"),
        ("peer-cert-allowed-hostname", "peer.example.com"),
        ("peer-crl-file", "/tmp/peer.crl"),
        ("cipher-suites", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
        ("cors", "http://example.com:8080"),
        ("host-whitelist", "example.com"),
        ("auth-token", "simple"),
        ("bcrypt-cost", "12"),
        ("auth-token-ttl", "600"),
        ("metrics", "extensive"),
        ("listen-metrics-urls", "http://127.0.0.1:2381"),
        ("logger", "capnslog"),
        ("log-outputs", "stdout"),
        ("log-level", "debug"),
        ("proxy", "off"),
        ("proxy-failure-wait", "1000"),
        ("proxy-refresh-interval", "1000"),
        ("proxy-dial-timeout", "2000"),
        ("proxy-write-timeout", "1000"),
        ("proxy-read-timeout", "1000"),
        ("experimental-corrupt-check-time", "5m"),
        ("experimental-enable-v2v3", "/v2/"),
        ("experimental-backend-bbolt-freelist-type", "map"),
        ("experimental-compaction-batch-limit", "500"),
        ("experimental-watch-progress-notify-interval", "5s"),
        ("experimental-warning-apply-duration", "200ms"),
        ("log-package-levels", "etcdmain=DEBUG"),
    ] {
        m.insert(flag, v(flag, value));
    }
    m.insert(
        "listen-client-urls",
        vec![
            "--listen-client-urls=http://127.0.0.1:7179".into(),
            "--advertise-client-urls=http://127.0.0.1:7179".into(),
        ],
    );
    m.insert(
        "config-file",
        vec![format!("--config-file={}", file.display())],
    );
    m.insert("version", vec!["--version".into()]);
    m
}

#[test]
fn every_etcd_flag_parses_and_lands_in_its_class() {
    let dir = tempfile::tempdir().expect("tempdir");
    let values = plausible(dir.path());
    let flags = help_flags();
    assert!(flags.len() >= 80, "the help lists {} flags", flags.len());
    let known: Vec<&str> = flag_names().collect();
    for (flag, default) in &flags {
        assert!(
            known.contains(&flag.as_str()),
            "--{flag} is unknown to keel"
        );
        let args: Vec<String> = match (values.get(flag.as_str()), default.as_str()) {
            (Some(a), _) => a.clone(),
            // Booleans: the other value than etcd's default.
            (None, "false") => vec![format!("--{flag}=true")],
            (None, "true") => vec![format!("--{flag}=false")],
            (None, d) => panic!("no plausible value for --{flag} (default {d:?})"),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cfg = parse_args(&args).unwrap_or_else(|e| panic!("{args:?} refused: {e}"));
        let mentions: Vec<&String> = cfg
            .warnings
            .iter()
            .filter(|w| w.starts_with(&format!("--{flag} ")))
            .collect();
        if NOT_JUDGED_HERE.contains(&flag.as_str()) {
            continue;
        }
        if WARNED.contains(&flag.as_str()) {
            let why = ignored_reason(flag).expect("a reason");
            assert_eq!(
                mentions,
                [&format!("--{flag} is accepted but ignored: {why}")],
                "{args:?}"
            );
        } else {
            assert!(mentions.is_empty(), "{args:?} warned: {mentions:?}");
            assert!(ignored_reason(flag).is_none(), "--{flag}");
        }
        // Nothing else warns about a single honoured flag either.
        assert!(
            cfg.warnings.iter().all(|w| !w.contains('\n')),
            "{:?}",
            cfg.warnings
        );
    }
    // Every ignored flag of the table is one etcd's help lists or a hidden etcd flag.
    for w in WARNED {
        assert!(
            flags.iter().any(|(f, _)| f == w),
            "--{w} not in etcd's help"
        );
    }
}

#[test]
fn ignored_flags_at_their_default_say_nothing() {
    let c = parse_args(&[
        "--metrics=basic",
        "--enable-pprof=false",
        "--backend-batch-limit=0",
        "--experimental-backend-bbolt-freelist-type=array",
        "--proxy=off",
    ])
    .expect("parses");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Hidden flags of etcd 3.4 parse too; the 0.4 leftovers warn in etcd's words.
    let c = parse_args(&[
        "--unsafe-no-fsync",
        "--enable-grpc-gateway=false",
        "--log-output=stdout",
        "--experimental-enable-lease-checkpoint",
        "--experimental-enable-lease-checkpoint-persist",
        "-v",
        "--snapshot=true",
    ])
    .expect("parses");
    assert_eq!(c.log_outputs, ["stdout"]);
    assert_eq!(
        c.warnings,
        [
            "--experimental-enable-lease-checkpoint-persist is accepted but ignored: keel does not persist lease remaining TTLs",
            "--unsafe-no-fsync is accepted but ignored: keel always syncs its WAL",
            "flag \"-snapshot\" is no longer supported - ignoring.",
            "flag \"-v\" is no longer supported - ignoring.",
        ]
    );
}

#[test]
fn unsupported_values_are_refused_with_one_line() {
    let e = parse_args(&["--proxy=on"]).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid value \"on\" for flag --proxy: keel does not implement etcd's v2 proxy; only 'off' is supported"
    );
    let e = parse_args(&["--proxy=sideways"]).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid value \"sideways\" for flag --proxy: valid values are off, readonly, on"
    );
    assert_eq!(
        parse_args(&["--experimental-enable-lease-checkpoint-persist"])
            .unwrap_err()
            .to_string(),
        "setting experimental-enable-lease-checkpoint-persist requires experimental-enable-lease-checkpoint"
    );
    assert_eq!(
        parse_args(&["--cors=http://example.com"]).unwrap_err().to_string(),
        "invalid value \"http://example.com\" for flag --cors: URL address does not have the form \"host:port\": http://example.com"
    );
}

#[test]
fn newly_honoured_flags_land_in_their_fields() {
    let c = parse_args(&[]).expect("defaults");
    assert_eq!(c.max_concurrent_streams, u32::MAX);
    assert_eq!(
        (c.cors.clone(), c.host_whitelist.clone()),
        (vec!["*".to_string()], vec!["*".to_string()])
    );
    assert_eq!(c.corrupt_check_time, Duration::ZERO);
    assert!(!c.lease_checkpoint && c.config_file.is_none());
    assert_eq!(c.client_tls.crl_file, None);

    let c = parse_args(&[
        "--max-concurrent-streams=100",
        "--cors=http://a.example:8080,http://b.example:80",
        "--host-whitelist=a.example,b.example",
        "--experimental-corrupt-check-time=3m",
        "--experimental-enable-lease-checkpoint",
        "--client-crl-file=/c.crl",
        "--client-cert-allowed-hostname=client.example",
        "--peer-crl-file=/p.crl",
        "--peer-cert-allowed-cn=etcd-peer",
        "--debug",
    ])
    .expect("parses");
    assert_eq!(c.max_concurrent_streams, 100);
    assert_eq!(c.cors, ["http://a.example:8080", "http://b.example:80"]);
    assert_eq!(c.host_whitelist, ["a.example", "b.example"]);
    assert_eq!(c.corrupt_check_time, Duration::from_secs(180));
    assert!(c.lease_checkpoint);
    assert_eq!(
        c.client_tls.crl_file.as_deref(),
        Some(std::path::Path::new("/c.crl"))
    );
    assert_eq!(
        c.client_tls.allowed_hostname.as_deref(),
        Some("client.example")
    );
    assert_eq!(
        c.peer_tls.crl_file.as_deref(),
        Some(std::path::Path::new("/p.crl"))
    );
    assert_eq!(c.peer_tls.allowed_cn.as_deref(), Some("etcd-peer"));
    assert_eq!(c.log_level, LogLevel::Debug);
    // grpc-go reads 0 streams as no limit.
    assert_eq!(
        parse_args(&["--max-concurrent-streams=0"])
            .unwrap()
            .max_concurrent_streams,
        u32::MAX
    );
    assert!(parse_args(&["--max-concurrent-streams=4294967296"]).is_err());
}
