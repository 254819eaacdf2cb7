//! `--config-file`: etcd 3.4's YAML configuration, from etcd's own sample file on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_server::config::{
    parse, CompactionRetention, ConfigError, Logger, ServerConfig, TlsConfig,
};
use keel_server::config_file::from_yaml;

const SAMPLE: &str = include_str!("data/etcd.conf.yml.sample");

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

fn write(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("etcd.conf.yml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn from_file(text: &str) -> Result<ServerConfig, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), text);
    parse_with_env(&["--config-file", p.to_str().expect("utf-8")], &[])
}

#[test]
fn etcds_sample_config_file_is_read_as_etcd_reads_it() {
    let c = from_file(SAMPLE).expect("etcd's sample parses");
    assert_eq!(c.name, "default");
    // `data-dir:` is null in the sample: the default stays.
    assert_eq!(c.data_dir, PathBuf::from("default.keel"));
    assert_eq!(c.snapshot_count, 10_000);
    assert_eq!(
        (c.heartbeat_interval_ms, c.election_timeout_ms),
        (100, 1000)
    );
    assert_eq!(c.listen_peer_urls, ["http://localhost:2380"]);
    assert_eq!(c.listen_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.advertise_client_urls, ["http://localhost:2379"]);
    assert_eq!(c.initial_cluster, "default=http://localhost:2380");
    assert_eq!(c.initial_cluster_token, "etcd-cluster");
    assert!(!c.strict_reconfig_check && c.enable_v2 && c.enable_pprof);
    assert_eq!(c.client_tls, TlsConfig::default());
    assert_eq!(c.peer_tls, TlsConfig::default());
    assert_eq!(c.logger, Logger::Zap);
    assert_eq!(c.log_outputs, ["stderr"]);
    assert!(!c.force_new_cluster);
    assert_eq!(
        c.auto_compaction_retention,
        CompactionRetention::Period(Duration::from_secs(3600))
    );
    assert_eq!(c.cors, ["*"]);
    assert!(c.config_file.is_some());
    // The sample turns on pprof, which keel has no Go runtime for.
    assert_eq!(
        c.warnings,
        ["--enable-pprof is accepted but ignored: keel has no Go runtime to profile"]
    );
}

#[test]
fn a_config_file_shadows_flags_and_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write(dir.path(), "name: from-file\nsnapshot-count: 7\n");
    let path = p.to_str().expect("utf-8");
    let c = parse_with_env(
        &["--config-file", path, "--name", "from-flag", "--max-wals=9"],
        &[("ETCD_SNAPSHOT_COUNT", "3"), ("ETCD_MAX_SNAPSHOTS", "2")],
    )
    .expect("parses");
    assert_eq!(c.name, "from-file");
    assert_eq!(c.snapshot_count, 7);
    assert_eq!(
        (c.max_wals, c.max_snapshots),
        (5, 5),
        "flags and variables are ignored"
    );
    assert_eq!(c.config_file.as_deref(), Some(p.as_path()));
    // ETCD_CONFIG_FILE names the file too.
    let c =
        parse_with_env(&["--name", "from-flag"], &[("ETCD_CONFIG_FILE", path)]).expect("parses");
    assert_eq!(c.name, "from-file");
    // An unknown flag is still refused: etcd parses the command line first.
    assert!(parse_with_env(&["--config-file", path, "--nope"], &[]).is_err());
    // --version is acted on before the file.
    let c = parse_with_env(&["--config-file", path, "--version"], &[]).expect("parses");
    assert!(c.print_version);
}

#[test]
fn tls_blocks_set_each_side() {
    let c = from_file(
        "listen-client-urls: https://127.0.0.1:7150\n\
         advertise-client-urls: https://127.0.0.1:7150\n\
         listen-peer-urls: https://127.0.0.1:7151\n\
         initial-advertise-peer-urls: https://127.0.0.1:7151\n\
         client-transport-security:\n  cert-file: /s.crt\n  key-file: /s.key\n  client-cert-auth: true\n  trusted-ca-file: /ca.crt\n  auto-tls: false\n  crl-file: /c.crl\n\
         peer-transport-security:\n  cert-file: /p.crt\n  key-file: /p.key\n  client-cert-auth: true\n  trusted-ca-file: /ca.crt\n\
         client-crl-file: /top.crl\n",
    )
    .expect("parses");
    assert_eq!(c.client_tls.cert_file.as_deref(), Some(Path::new("/s.crt")));
    assert_eq!(c.client_tls.key_file.as_deref(), Some(Path::new("/s.key")));
    assert_eq!(
        c.client_tls.trusted_ca_file.as_deref(),
        Some(Path::new("/ca.crt"))
    );
    assert!(c.client_tls.client_cert_auth && !c.client_tls.auto_tls);
    assert_eq!(c.peer_tls.cert_file.as_deref(), Some(Path::new("/p.crt")));
    assert_eq!(c.peer_tls.key_file.as_deref(), Some(Path::new("/p.key")));
    assert!(c.peer_tls.client_cert_auth);
    // etcd 3.4 reads neither key from a file: keel ignores them as etcd does, but says so.
    assert_eq!(c.client_tls.crl_file, None);
    assert_eq!(
        c.warnings,
        [
            "config file key \"client-transport-security.crl-file\" is ignored: etcd 3.4 does not read it from a config file",
            "config file key \"client-crl-file\" is ignored: etcd 3.4 does not read it from a config file",
        ]
    );
    // An https URL still needs a certificate, named by the block's key.
    let e = from_file("listen-client-urls: https://127.0.0.1:7150\nadvertise-client-urls: https://127.0.0.1:7150\n")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:7150 with HTTPS scheme");
}

#[test]
fn values_take_etcds_yaml_types_and_the_flag_spellings() {
    let c = from_file(
        "grpc-keepalive-interval: 3600000000000\n\
         grpc-keepalive-timeout: 10s\n\
         cipher-suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n\
         log-outputs: stdout,stderr\n\
         initial-cluster-state: existing\n\
         max-concurrent-streams: 1000\n\
         cors: 'http://a.example:80,http://b.example:80'\n\
         host-whitelist: a.example\n\
         experimental-corrupt-check-time: 60000000000\n\
         experimental-enable-lease-checkpoint: true\n\
         experimental-initial-corrupt-check: true\n\
         quota-backend-bytes: 8589934592\n",
    )
    .expect("parses");
    assert_eq!(c.grpc_keepalive_interval, Duration::from_secs(3600));
    assert_eq!(c.grpc_keepalive_timeout, Duration::from_secs(10));
    assert_eq!(
        c.cipher_suites,
        [
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        ]
    );
    assert_eq!(c.log_outputs, ["stdout", "stderr"]);
    assert!(!c.is_new_cluster());
    assert_eq!(c.max_concurrent_streams, 1000);
    assert_eq!(c.cors, ["http://a.example:80", "http://b.example:80"]);
    assert_eq!(c.host_whitelist, ["a.example"]);
    assert_eq!(c.corrupt_check_time, Duration::from_secs(60));
    assert!(c.lease_checkpoint && c.initial_corrupt_check);
    assert_eq!(c.quota_bytes(), Some(8_589_934_592));
}

#[test]
fn bad_config_files_are_one_line_errors() {
    let e = parse_with_env(&["--config-file", "/nonexistent/etcd.yml"], &[])
        .unwrap_err()
        .to_string();
    assert_eq!(e, "open /nonexistent/etcd.yml: no such file or directory");
    let e = from_file("name: [a\n").unwrap_err().to_string();
    assert!(
        e.starts_with("error reading config file ") && !e.contains('\n'),
        "{e}"
    );
    let e = from_file("- a\n- b\n").unwrap_err().to_string();
    assert!(
        e.ends_with("the config file is not a YAML mapping of settings"),
        "{e}"
    );
    let e = from_file("client-transport-security: yes-please\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("config file key client-transport-security must be a mapping"),
        "{e}"
    );
    // A value that does not convert names the key it came from.
    let e = from_file("snapshot-count: lots\n").unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid value \"lots\" for config file key snapshot-count: expected a non-negative integer"
    );
    let e = from_file("peer-transport-security:\n  client-cert-auth: maybe\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid value \"maybe\" for config file key peer-transport-security.client-cert-auth: expected a boolean (true or false)"
    );
    // An empty file is etcd's defaults.
    assert_eq!(from_yaml("").expect("empty"), Default::default());
}
