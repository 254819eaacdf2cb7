//! `keel_server::config`: etcd's flags, environment variables, defaults and error texts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keel_server::config::{
    parse, ClusterState, CompactionMode, CompactionRetention, ConfigError, DiscoveryFallback,
    LogLevel, Logger, ServerConfig, TlsConfig, DEFAULT_QUOTA_BYTES,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse_args(args: &[&str]) -> Result<ServerConfig, ConfigError> {
    parse(std::iter::once("keel").chain(args.iter().copied()), &no_env)
}

fn parse_with_env(args: &[&str], vars: &[(&str, &str)]) -> Result<ServerConfig, ConfigError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    parse(
        std::iter::once("keel").chain(args.iter().copied()),
        &move |k: &str| vars.get(k).cloned(),
    )
}

fn err(args: &[&str]) -> String {
    parse_args(args)
        .expect_err("the arguments should be rejected")
        .to_string()
}

#[test]
fn config_defaults_with_no_flags() {
    let c = parse_args(&[]).unwrap();
    assert_eq!(c.name, "default");
    assert_eq!(c.data_dir, PathBuf::from("default.keel"));
    assert_eq!(c.wal_dir, None);
    assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.listen_peer_urls, ["http://localhost:2380"]);
    assert_eq!(c.initial_advertise_peer_urls, ["http://localhost:2380"]);
    assert!(c.listen_metrics_urls.is_empty());
    assert_eq!(c.initial_cluster, "default=http://localhost:2380");
    assert_eq!(c.initial_cluster_state, ClusterState::New);
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert_eq!(
        (
            c.heartbeat_interval_ms,
            c.election_timeout_ms,
            c.election_ticks()
        ),
        (100, 1000, 10)
    );
    assert_eq!(c.snapshot_count, 100_000);
    assert_eq!((c.max_snapshots, c.max_wals), (5, 5));
    assert_eq!(c.quota_bytes(), Some(DEFAULT_QUOTA_BYTES));
    assert_eq!((c.max_request_bytes, c.max_txn_ops), (1_572_864, 128));
    assert_eq!(c.grpc_keepalive_min_time, Duration::from_secs(5));
    assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(7200));
    assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(20));
    assert_eq!(c.auto_compaction_mode, CompactionMode::Periodic);
    assert_eq!(c.auto_compaction_retention, CompactionRetention::Off);
    assert_eq!((c.logger, c.log_level), (Logger::Zap, LogLevel::Info));
    assert_eq!(c.log_outputs, ["default"]);
    assert_eq!(c.discovery_fallback, DiscoveryFallback::Proxy);
    assert!(c.strict_reconfig_check && c.initial_election_tick_advance);
    assert!(!c.pre_vote && !c.enable_v2 && !c.enable_pprof && !c.print_version);
    assert_eq!(c.client_tls, TlsConfig::default());
    assert_eq!(
        (c.auth_token.as_str(), c.bcrypt_cost, c.auth_token_ttl_secs),
        ("simple", 10, 300)
    );
    assert!(c.warnings.is_empty());
    let local = SocketAddr::from(([127, 0, 0, 1], 2379));
    assert_eq!(c.listen_client_addrs().unwrap(), [local]);
    assert_eq!(
        c.listen_peer_addrs().unwrap(),
        [SocketAddr::from(([127, 0, 0, 1], 2380))]
    );
}

#[test]
fn config_initial_cluster_default_follows_name_and_advertise_urls() {
    let c = parse_args(&[
        "--name",
        "infra1",
        "--initial-advertise-peer-urls",
        "http://10.0.0.1:2380,https://[::1]:2381",
        "--peer-auto-tls",
    ])
    .unwrap();
    assert_eq!(
        c.initial_cluster,
        "infra1=http://10.0.0.1:2380,infra1=https://[::1]:2381"
    );
    assert_eq!(c.data_dir, PathBuf::from("infra1.keel"));
    // Discovery replaces the default instead of conflicting with it.
    let c = parse_args(&["--discovery", "http://d:2379/v2/keys/discovery/x"]).unwrap();
    assert_eq!(c.initial_cluster, "");
}

#[test]
fn config_env_fills_a_value_and_flag_beats_env() {
    let c = parse_with_env(
        &[],
        &[
            ("ETCD_NAME", "from-env"),
            ("ETCD_ENABLE_PPROF", "1"),
            ("ETCD_UNKNOWN", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.name, "from-env");
    assert!(c.enable_pprof);
    let c = parse_with_env(&["--name", "from-flag"], &[("ETCD_NAME", "from-env")]).unwrap();
    assert_eq!(c.name, "from-flag");
    assert_eq!(
        c.warnings,
        ["environment variable ETCD_NAME is ignored: the --name flag is set"]
    );
    // An empty variable counts as unset.
    let c = parse_with_env(&[], &[("ETCD_NAME", "")]).unwrap();
    assert_eq!(c.name, "default");
}

#[test]
fn config_env_errors_name_the_variable() {
    let e = parse_with_env(&[], &[("ETCD_ENABLE_PPROF", "yes")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value \"yes\" for ETCD_ENABLE_PPROF: expected a boolean (true or false)"
    );
}

#[test]
fn config_single_dash_and_equals_forms() {
    let c = parse_args(&[
        "-name",
        "a",
        "-data-dir=/tmp/x",
        "--snapshot-count=7",
        "-wal-dir",
        "-odd",
    ])
    .unwrap();
    assert_eq!(c.name, "a");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.snapshot_count, 7);
    // A value that looks like a flag stays a value, as in Go.
    assert_eq!(c.wal_dir, Some(PathBuf::from("-odd")));
    // A repeated flag: the last wins.
    assert_eq!(
        parse_args(&["--name", "a", "--name", "b"]).unwrap().name,
        "b"
    );
}

#[test]
fn config_bool_forms() {
    assert!(parse_args(&["--enable-pprof"]).unwrap().enable_pprof);
    assert!(parse_args(&["-enable-pprof"]).unwrap().enable_pprof);
    assert!(parse_args(&["--enable-pprof=true"]).unwrap().enable_pprof);
    assert!(!parse_args(&["--enable-pprof=false"]).unwrap().enable_pprof);
    assert!(
        !parse_args(&["--strict-reconfig-check=false"])
            .unwrap()
            .strict_reconfig_check
    );
    assert!(
        !parse_args(&["--strict-reconfig-check=0"])
            .unwrap()
            .strict_reconfig_check
    );
    assert_eq!(
        err(&["--enable-pprof", "false"]),
        "'false' is not a valid flag"
    );
    assert_eq!(
        err(&["--enable-pprof=yes"]),
        "invalid value \"yes\" for flag --enable-pprof: expected a boolean (true or false)"
    );
}

#[test]
fn config_force_new_cluster_flag_and_variable() {
    let force = |args: &[&str], vars: &[(&str, &str)]| {
        parse_with_env(args, vars)
            .map(|c| c.force_new_cluster)
            .map_err(|e| e.to_string())
    };
    assert_eq!(force(&[], &[]), Ok(false));
    assert_eq!(force(&["--force-new-cluster"], &[]), Ok(true));
    assert_eq!(force(&["-force-new-cluster"], &[]), Ok(true));
    assert_eq!(force(&["--force-new-cluster=true"], &[]), Ok(true));
    assert_eq!(force(&["--force-new-cluster=false"], &[]), Ok(false));
    assert_eq!(force(&[], &[("ETCD_FORCE_NEW_CLUSTER", "true")]), Ok(true));
    assert_eq!(
        force(&[], &[("ETCD_FORCE_NEW_CLUSTER", "false")]),
        Ok(false)
    );
    // The flag beats its variable, as for every flag.
    assert_eq!(
        force(
            &["--force-new-cluster=false"],
            &[("ETCD_FORCE_NEW_CLUSTER", "true")]
        ),
        Ok(false)
    );
    assert_eq!(
        force(&[], &[("ETCD_FORCE_NEW_CLUSTER", "yes")]),
        Err(
            "invalid value \"yes\" for ETCD_FORCE_NEW_CLUSTER: expected a boolean (true or false)"
                .into()
        )
    );
    // Go's boolean flags never take the next word as their value.
    assert_eq!(
        force(&["--force-new-cluster", "true"], &[]),
        Err("'true' is not a valid flag".into())
    );
}

#[test]
fn config_command_line_errors_are_one_line() {
    assert_eq!(err(&["--foo"]), "unknown flag --foo");
    assert_eq!(err(&["-foo=1"]), "unknown flag --foo");
    let missing = err(&["--name"]);
    assert!(
        !missing.contains('\n') && missing.contains("--name"),
        "{missing}"
    );
    assert!(matches!(parse_args(&["--help"]), Err(ConfigError::Help(_))));
    assert!(parse_args(&["--version"]).unwrap().print_version);
    assert_eq!(
        err(&["--config-file", "/nonexistent/etcd.yaml"]),
        "open /nonexistent/etcd.yaml: no such file or directory"
    );
}

#[test]
fn config_value_errors() {
    assert_eq!(
        err(&["--initial-cluster-state", "bogus"]),
        "invalid value \"bogus\" for flag --initial-cluster-state: valid values are new, existing"
    );
    assert_eq!(
        err(&["--heartbeat-interval", "abc"]),
        "invalid value \"abc\" for flag --heartbeat-interval: expected a non-negative integer"
    );
    assert_eq!(
        err(&["--log-level", "loud"]),
        "invalid value \"loud\" for flag --log-level: valid values are debug, info, warn, error, panic, fatal"
    );
    assert_eq!(
        err(&["--grpc-keepalive-min-time", "5"]),
        "invalid value \"5\" for flag --grpc-keepalive-min-time: time: missing unit in duration \"5\""
    );
}

#[test]
fn config_url_errors_name_the_flag() {
    assert_eq!(
        err(&["--listen-peer-urls", "localhost:2380"]),
        "invalid value \"localhost:2380\" for flag --listen-peer-urls: URL scheme must be http, https, unix, or unixs: localhost:2380"
    );
    assert_eq!(
        err(&["--initial-advertise-peer-urls", "http://10.0.0.1"]),
        "invalid value \"http://10.0.0.1\" for flag --initial-advertise-peer-urls: URL address does not have the form \"host:port\": http://10.0.0.1"
    );
    assert_eq!(
        err(&["--listen-client-urls", "http://example.com:2379", "--advertise-client-urls", "http://example.com:2379"]),
        "invalid value \"http://example.com:2379\" for flag --listen-client-urls: expected IP in URL for binding (http://example.com:2379)"
    );
    assert_eq!(
        err(&["--advertise-client-urls", "http://h:2379/v3"]),
        "invalid value \"http://h:2379/v3\" for flag --advertise-client-urls: URL must not contain a path: http://h:2379/v3"
    );
    assert_eq!(
        err(&["--initial-cluster", "a"]),
        "invalid value \"a\" for flag --initial-cluster: initial cluster entry \"a\" is not of the form name=url"
    );
}

#[test]
fn config_cross_flag_errors() {
    assert_eq!(
        err(&["--election-timeout", "200"]),
        "--election-timeout[200ms] should be at least as 5 times as --heartbeat-interval[100ms]"
    );
    assert_eq!(
        err(&["--election-timeout", "60000"]),
        "--election-timeout[60000ms] is too long, and should be set less than 50000ms"
    );
    assert_eq!(
        err(&["--heartbeat-interval", "0"]),
        "--heartbeat-interval must be >0 (set to 0ms)"
    );
    assert_eq!(
        err(&["--election-timeout", "0"]),
        "--election-timeout must be >0 (set to 0ms)"
    );
    assert_eq!(
        err(&["--listen-client-urls", "http://0.0.0.0:2379"]),
        "--advertise-client-urls is required when --listen-client-urls is set explicitly"
    );
    assert_eq!(
        err(&["--discovery", "http://d:1/x", "--initial-cluster", "default=http://localhost:2380"]),
        "multiple discovery or bootstrap flags are set. Choose one of \"initial-cluster\", \"discovery\" or \"discovery-srv\""
    );
}

#[test]
fn config_https_needs_certs_or_auto_tls() {
    let https_client = [
        "--listen-client-urls",
        "https://127.0.0.1:2379",
        "--advertise-client-urls",
        "https://127.0.0.1:2379",
    ];
    assert_eq!(
        err(&https_client),
        "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
    );
    let mut with_certs = https_client.to_vec();
    with_certs.extend(["--cert-file", "c.pem", "--key-file", "k.pem"]);
    assert_eq!(
        parse_args(&with_certs).unwrap().client_tls.cert_file,
        Some(PathBuf::from("c.pem"))
    );
    let mut with_auto = https_client.to_vec();
    with_auto.push("--auto-tls");
    assert!(parse_args(&with_auto).is_ok());
    assert_eq!(
        err(&["--listen-peer-urls", "https://127.0.0.1:2380"]),
        "TLS key/cert (--peer-cert-file, --peer-key-file) must be provided for peer url https://127.0.0.1:2380 with HTTPS scheme"
    );
    assert!(parse_args(&[
        "--listen-peer-urls",
        "https://127.0.0.1:2380",
        "--peer-auto-tls=true"
    ])
    .is_ok());
}

#[test]
fn config_compaction_retention() {
    let c = parse_args(&["--auto-compaction-retention", "1"]).unwrap();
    assert_eq!(
        c.auto_compaction_retention,
        CompactionRetention::Period(Duration::from_secs(3600))
    );
    let c = parse_args(&["--auto-compaction-retention", "1h30m"]).unwrap();
    assert_eq!(
        c.auto_compaction_retention,
        CompactionRetention::Period(Duration::from_secs(5400))
    );
    let c = parse_args(&[
        "--auto-compaction-mode",
        "revision",
        "--auto-compaction-retention",
        "1000",
    ])
    .unwrap();
    assert_eq!(
        c.auto_compaction_retention,
        CompactionRetention::Revisions(1000)
    );
    assert_eq!(
        err(&["--auto-compaction-retention", "5x"]),
        "invalid value \"5x\" for flag --auto-compaction-retention: error parsing CompactionRetention: time: unknown unit \"x\" in duration \"5x\""
    );
    assert_eq!(
        err(&["--auto-compaction-mode", "revision", "--auto-compaction-retention", "5m"]),
        "invalid value \"5m\" for flag --auto-compaction-retention: revision mode takes a number of revisions"
    );
}

#[test]
fn config_helpers() {
    let c = parse_args(&[
        "--listen-client-urls",
        "http://0.0.0.0:2379,http://[::1]:2379",
        "--advertise-client-urls",
        "http://10.0.0.1:2379",
        "--quota-backend-bytes",
        "-1",
        "--bcrypt-cost",
        "2",
    ])
    .unwrap();
    assert_eq!(
        c.listen_client_addrs().unwrap(),
        [
            "0.0.0.0:2379".parse::<SocketAddr>().unwrap(),
            "[::1]:2379".parse().unwrap()
        ]
    );
    assert_eq!(c.quota_bytes(), None);
    assert_eq!(c.bcrypt_cost, 10);
    assert_eq!(
        c.warnings,
        ["Use default bcrypt-cost 10 instead of the invalid value 2"]
    );
    let mut named = c.clone();
    named.listen_peer_urls = vec!["http://example.com:2380".to_owned()];
    assert_eq!(
        named.listen_peer_addrs().unwrap_err().to_string(),
        "expected IP in URL for binding (http://example.com:2380)"
    );
    assert_eq!(
        parse_args(&["--quota-backend-bytes", "1024"])
            .unwrap()
            .quota_bytes(),
        Some(1024)
    );
}

#[test]
fn config_auth_flags_and_env() {
    let c = parse_args(&[
        "--auth-token",
        "jwt,pub-key=/k.pub,priv-key=/k,sign-method=RS256,ttl=10m",
        "--auth-token-ttl",
        "60",
        "--bcrypt-cost",
        "12",
    ])
    .unwrap();
    assert_eq!(
        (c.auth_token.as_str(), c.auth_token_ttl_secs, c.bcrypt_cost),
        (
            "jwt,pub-key=/k.pub,priv-key=/k,sign-method=RS256,ttl=10m",
            60,
            12
        )
    );
    let c = parse_with_env(
        &[],
        &[
            ("ETCD_AUTH_TOKEN", "jwt,priv-key=/s,sign-method=HS256"),
            ("ETCD_AUTH_TOKEN_TTL", "30"),
            ("ETCD_BCRYPT_COST", "4"),
        ],
    )
    .unwrap();
    assert_eq!(
        (c.auth_token.as_str(), c.auth_token_ttl_secs, c.bcrypt_cost),
        ("jwt,priv-key=/s,sign-method=HS256", 30, 4)
    );
    // etcd's bcrypt range is 4..=31; outside it etcd warns and uses 10.
    let c = parse_args(&["--bcrypt-cost", "32"]).unwrap();
    assert_eq!(c.bcrypt_cost, 10);
    assert_eq!(
        c.warnings,
        ["Use default bcrypt-cost 10 instead of the invalid value 32"]
    );
    assert_eq!(
        parse_args(&["--bcrypt-cost", "31"]).unwrap().bcrypt_cost,
        31
    );
    assert_eq!(
        err(&["--auth-token-ttl", "5m"]),
        "invalid value \"5m\" for flag --auth-token-ttl: expected a non-negative integer"
    );
    assert_eq!(
        err(&["--bcrypt-cost", "ten"]),
        "invalid value \"ten\" for flag --bcrypt-cost: expected a non-negative integer"
    );
    let e = parse_with_env(&[], &[("ETCD_AUTH_TOKEN_TTL", "-1")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value \"-1\" for ETCD_AUTH_TOKEN_TTL: expected a non-negative integer"
    );
}

#[test]
fn config_bad_auth_token_stops_the_start_with_one_line() {
    let start = |spec: &str| {
        let cfg = parse_args(&["--auth-token", spec]).unwrap();
        keel_server::launch::check_auth_token(&cfg)
    };
    assert_eq!(start("simple"), Ok(()));
    assert_eq!(
        start("jwtt"),
        Err("--auth-token: auth: invalid auth options: unknown token type \"jwtt\" (expected \"simple\" or \"jwt,...\")".to_owned())
    );
    assert_eq!(
        start("jwt,sign-method=RS256"),
        Err("--auth-token: auth: missing key data: jwt with RS256 needs priv-key=PATH, or pub-key=PATH to only verify tokens".to_owned())
    );
    assert_eq!(
        start("jwt,sign-method=RS257,priv-key=/k"),
        Err("--auth-token: auth: invalid auth signature method: unknown sign-method \"RS257\" (expected one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512)".to_owned())
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.key");
    assert_eq!(
        start(&format!("jwt,sign-method=RS256,priv-key={}", missing.display())),
        Err(format!(
            "--auth-token: auth: invalid auth options: cannot read key file {}: No such file or directory (os error 2)",
            missing.display()
        ))
    );
    // The whole binary stops with that line before binding anything.
    let e = keel_server::launch::main(
        ["keel", "--auth-token", "jwtt", "--log-level", "error"]
            .iter()
            .map(Into::into)
            .collect(),
    )
    .unwrap_err();
    assert!(
        e.starts_with("--auth-token: auth: invalid auth options"),
        "{e}"
    );
    assert!(!e.contains('\n'));
}

#[test]
fn config_takes_the_corrupt_check_flags_etcd_harnesses_pass() {
    // etcd's e2e harness starts every member with the bare flag; kubeadm sets it too.
    let c = parse_args(&["--experimental-initial-corrupt-check"]).unwrap();
    assert!(c.initial_corrupt_check && c.warnings.is_empty());
    let c = parse_args(&["--experimental-initial-corrupt-check=false"]).unwrap();
    assert!(!c.initial_corrupt_check && c.warnings.is_empty());
    let c = parse_with_env(&[], &[("ETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK", "true")]).unwrap();
    assert!(c.initial_corrupt_check);
    // The periodic check: off by default, a Go duration otherwise.
    assert_eq!(parse_args(&[]).unwrap().corrupt_check_time, Duration::ZERO);
    let c = parse_args(&["--experimental-corrupt-check-time", "2m30s"]).unwrap();
    assert_eq!(c.corrupt_check_time, Duration::from_secs(150));
    let c = parse_with_env(&[], &[("ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME", "500ms")]).unwrap();
    assert_eq!(c.corrupt_check_time, Duration::from_millis(500));
    let e = parse_args(&["--experimental-corrupt-check-time=often"])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid value \"often\" for flag --experimental-corrupt-check-time"),
        "{e}"
    );
}

#[test]
fn lease_checkpoint_flags() {
    let c = parse_args(&[]).unwrap();
    assert!(!c.lease_checkpoint, "off by default, as in etcd");
    assert_eq!(c.lease_checkpoint_interval, Duration::from_secs(300));
    let c = parse_with_env(
        &["--experimental-enable-lease-checkpoint"],
        &[("ETCD_EXPERIMENTAL_LEASE_CHECKPOINT_INTERVAL", "90s")],
    )
    .unwrap();
    assert!(c.lease_checkpoint);
    assert_eq!(c.lease_checkpoint_interval, Duration::from_secs(90));
    let e = err(&["--experimental-lease-checkpoint-interval=soon"]);
    assert!(e.contains("experimental-lease-checkpoint-interval"), "{e}");
}
