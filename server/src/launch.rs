//! From flags to a running member: parse and validate etcd's configuration, decide
//! between bootstrap and restart, bind the listeners and run until a signal.

use std::ffi::OsString;

use keel_core::discovery::{bootstrap_members, cluster_id};
use keel_core::node::{AutoCompaction, MemberInfo};
use keel_runtime_tokio::auth::Tokens;
use keel_runtime_tokio::http_access::HttpAccess;
use keel_runtime_tokio::listen::{BindAddr, SocketListener};
use keel_runtime_tokio::member::MemberConfig;
use keel_runtime_tokio::serve::ClientOptions;
use keel_runtime_tokio::storage::DataDirs;
use keel_runtime_tokio::tls::PeerDialer;
use keel_runtime_tokio::{founding, serve, Storage};
use tokio::net::TcpListener;

use crate::bootstrap::{self, Plan};
use crate::config::{self, CompactionRetention, LogLevel, ServerConfig};
use crate::join;
use crate::proxy;
use crate::tls::MemberTls;

/// Runs `keel` with these arguments (program name first) until it is told to stop.
/// An error is one line for the operator.
pub fn main(args: Vec<OsString>) -> Result<(), String> {
    let explicit_zap = wants_json_logs(&args);
    let cfg = config::parse(args, &config::process_env).map_err(|e| e.to_string())?;
    if cfg.print_version {
        // etcd's first line first: scripts read the version from it.
        println!(
            "etcd Version: {}",
            keel_runtime_tokio::version::ETCD_SERVER_VERSION
        );
        println!("keel Version: {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    init_logging(&cfg, explicit_zap)?;
    if let Some(path) = &cfg.config_file {
        // etcd 3.4's line (zap logger), so operators see why their flags did nothing.
        tracing::info!(
            path = %path.display(),
            "loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"
        );
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    check_auth_token(&cfg)?;
    let tls = MemberTls::load(&cfg)?;
    let dialer = tls.dialer()?;
    let client_sockets = cfg.listen_client_sockets().map_err(|e| e.to_string())?;
    let peer_binds = cfg.listen_peer_binds().map_err(|e| e.to_string())?;
    let metrics_sockets = cfg.listen_metrics_sockets().map_err(|e| e.to_string())?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        // The member task syncs the WAL inside its round (one fdatasync per batch of
        // requests) and so blocks the worker it runs on for milliseconds at a time. With
        // one worker per core, a 2-core machine was left one worker for every gRPC and
        // peer stream meanwhile; two spare workers measured 13% more puts/s at 1000
        // clients and 30% more at 100 (`server/bench/vs-etcd.sh` workloads).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        builder.worker_threads(cores + 2);
    }
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let member = match member_config(&cfg, &dialer).await? {
            Start::Member(m) => *m,
            Start::Proxy(peer_urls) => {
                let addrs = cfg.listen_client_addrs().map_err(|e| e.to_string())?;
                let client = bind_all(&addrs).await?;
                tracing::info!(peers = %peer_urls.join(","), "discovered cluster is full: proxying clients to it");
                return proxy::run(peer_urls, dialer, client, shutdown_signal()).await;
            }
        };
        let mut client = Vec::new();
        for s in &client_sockets {
            client.push(bind(&s.addr, false).await?);
        }
        let client = tls.client_listeners(&client_sockets, client)?;
        let mut peers = Vec::new();
        for a in &peer_binds {
            // etcd replaces a stale peer socket file but not a client one.
            peers.push(bind(a, true).await?);
        }
        let peers = tls.peer_listeners(&cfg.listen_peer_urls, peers)?;
        let mut metrics = Vec::new();
        for s in &metrics_sockets {
            metrics.push(bind(&s.addr, false).await?);
        }
        let metrics = tls.client_listeners(&metrics_sockets, metrics)?;
        for u in &cfg.listen_metrics_urls {
            tracing::info!(address = %u, "serving metrics");
        }
        tracing::info!(
            name = %member.name,
            member_id = %format!("{:x}", member.id),
            cluster_id = %format!("{:x}", member.cluster_id),
            data_dir = %member.data_dir.display(),
            "starting member"
        );
        let client_urls = cfg.listen_client_urls.join(",");
        let listeners = serve::Listeners {
            client,
            peers,
            metrics,
        };
        let options = client_options(&cfg);
        serve::run_on(member, listeners, dialer, options, shutdown_signal(), |_| {
            tracing::info!(urls = %client_urls, "ready to serve client requests");
            serve::notify_systemd_ready();
        })
        .await
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// The gRPC server options and HTTP access rules of the client listeners.
fn client_options(cfg: &ServerConfig) -> ClientOptions {
    ClientOptions {
        max_concurrent_streams: cfg.max_concurrent_streams,
        keepalive_min_time: cfg.grpc_keepalive_min_time,
        grpc_gateway: cfg.enable_grpc_gateway,
        http_access: HttpAccess::new(cfg.cors.clone(), cfg.host_whitelist.clone()),
        ..ClientOptions::default()
    }
    .with_keepalive(cfg.grpc_keepalive_interval, cfg.grpc_keepalive_timeout)
}

/// etcd 3.5 logs JSON with zap; keel logs readable lines unless `--logger zap` is asked
/// for explicitly (flag or `ETCD_LOGGER`).
fn wants_json_logs(args: &[OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let from_flag = args.iter().enumerate().find_map(|(i, a)| {
        let a = a.trim_start_matches('-');
        if let Some(v) = a.strip_prefix("logger=") {
            Some(v.to_string())
        } else if a == "logger" {
            args.get(i + 1).cloned()
        } else {
            None
        }
    });
    from_flag
        .or_else(|| std::env::var("ETCD_LOGGER").ok())
        .as_deref()
        == Some("zap")
}

fn init_logging(cfg: &ServerConfig, json: bool) -> Result<(), String> {
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    let level = match cfg.log_level {
        LogLevel::Debug => tracing::Level::DEBUG,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Error | LogLevel::Panic | LogLevel::Fatal => tracing::Level::ERROR,
    };
    // `--log-outputs`: default/stderr, stdout, or file paths; several are written alike.
    let mut writer: Option<BoxMakeWriter> = None;
    for out in &cfg.log_outputs {
        let w = match out.as_str() {
            "default" | "stderr" => BoxMakeWriter::new(std::io::stderr),
            "stdout" => BoxMakeWriter::new(std::io::stdout),
            path => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("--log-outputs {path}: {e}"))?;
                BoxMakeWriter::new(std::sync::Mutex::new(f))
            }
        };
        writer = Some(match writer {
            None => w,
            Some(prev) => BoxMakeWriter::new(prev.and(w)),
        });
    }
    let writer = writer.unwrap_or_else(|| BoxMakeWriter::new(std::io::stderr));
    // rustls warns about every client that follows the standard and sends no SNI for an
    // IP address ("Illegal SNI extension: ignoring IP address presented as hostname"):
    // client-caused noise nobody can act on. Its handshake parser's other warnings are
    // about malformed client hellos, which fail the handshake and are reported there.
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "{},rustls::msgs::handshake=error",
        tracing::level_filters::LevelFilter::from_level(level)
    ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .with_writer(writer);
    // A second initialisation (tests calling `main` twice) is harmless: keep the first.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    Ok(())
}

/// A member whose WAL is in `<data-dir>/member/wal` restarted with a `--wal-dir`
/// elsewhere would otherwise bootstrap a new member over the data dir's snapshots (etcd
/// does exactly that): keel refuses and says where the WAL is.
fn refuse_misplaced_wal(dirs: &DataDirs) -> Result<(), String> {
    let default = DataDirs::new(&dirs.data, None);
    if default.wal != dirs.wal && Storage::identity(&default).ok().flatten().is_some() {
        return Err(format!(
            "{} holds this member's WAL but --wal-dir is {}: move the WAL there or start without --wal-dir",
            default.wal.display(),
            dirs.wal.display()
        ));
    }
    Ok(())
}

/// A bad `--auth-token` (unknown type, JWT without usable keys...) stops the start, as in
/// etcd, before anything is bound. The member parses it again when it starts.
pub fn check_auth_token(cfg: &ServerConfig) -> Result<(), String> {
    let ttl = std::time::Duration::from_secs(cfg.auth_token_ttl_secs);
    Tokens::from_spec(&cfg.auth_token, ttl).map_err(|e| format!("--auth-token: {e}"))?;
    Ok(())
}

/// What this process runs: a member, or (discovered cluster full) a client proxy.
enum Start {
    Member(Box<MemberConfig>),
    Proxy(Vec<String>),
}

/// Bootstrap (new data dir) or restart (identity from the WAL, `--initial-*` ignored).
async fn member_config(cfg: &ServerConfig, dialer: &PeerDialer) -> Result<Start, String> {
    let data_dir = cfg.data_dir.clone();
    let dirs = DataDirs::new(&data_dir, cfg.wal_dir.as_deref());
    let identity = Storage::identity(&dirs).map_err(|e| e.to_string())?;
    if identity.is_none() {
        refuse_misplaced_wal(&dirs)?;
    }
    let mut new_cluster = true;
    let (id, cid, members) = match identity {
        Some((cid, id)) => {
            tracing::info!(
                data_dir = %data_dir.display(),
                "restarting from the data dir; --initial-cluster flags are ignored"
            );
            if cfg.discovery.is_some() {
                tracing::warn!(
                    "discovery token ignored since a cluster has already been initialized. Valid log found at {}",
                    dirs.wal.display()
                );
            }
            let members = founding::load(&data_dir)?.ok_or_else(|| {
                format!(
                    "{}: the WAL exists but member/founding is missing",
                    data_dir.display()
                )
            })?;
            (id, cid, members)
        }
        None => match bootstrap::plan(cfg).await? {
            Plan::New {
                initial_cluster,
                token,
            } => {
                let (id, cid, members) = found(cfg, &initial_cluster, &token)?;
                founding::save(&data_dir, &members)
                    .map_err(|e| format!("{}: {e}", data_dir.display()))?;
                (id, cid, members)
            }
            Plan::Proxy { peer_urls } => return Ok(Start::Proxy(peer_urls)),
            Plan::Join => {
                let j = join::existing(cfg, dialer).await?;
                tracing::info!(
                    member_id = %format!("{:x}", j.id),
                    cluster_id = %format!("{:x}", j.cluster_id),
                    "joining the running cluster"
                );
                founding::save(&data_dir, &j.members)
                    .map_err(|e| format!("{}: {e}", data_dir.display()))?;
                new_cluster = false;
                (j.id, j.cluster_id, j.members)
            }
        },
    };
    Ok(Start::Member(Box::new(MemberConfig {
        id,
        cluster_id: cid,
        name: cfg.name.clone(),
        data_dir,
        wal_dir: cfg.wal_dir.clone(),
        initial_members: members,
        new_cluster,
        force_new_cluster: cfg.force_new_cluster,
        enable_v2: cfg.enable_v2,
        strict_reconfig: cfg.strict_reconfig_check,
        auth_token: cfg.auth_token.clone(),
        auth_token_ttl: std::time::Duration::from_secs(cfg.auth_token_ttl_secs),
        bcrypt_cost: cfg.bcrypt_cost,
        initial_corrupt_check: cfg.initial_corrupt_check,
        corrupt_check_time: cfg.corrupt_check_time,
        heartbeat_ms: cfg.heartbeat_interval_ms,
        election_ms: cfg.election_timeout_ms,
        snapshot_count: cfg.snapshot_count,
        max_snapshots: cfg.max_snapshots as usize,
        max_wals: cfg.max_wals as usize,
        quota_bytes: cfg.quota_bytes().unwrap_or(u64::MAX),
        max_txn_ops: cfg.max_txn_ops as usize,
        max_request_bytes: cfg.max_request_bytes as usize,
        client_urls: cfg.advertise_client_urls.clone(),
        pre_vote: cfg.pre_vote,
        log_tail: 5000,
        watch_progress_interval: cfg.watch_progress_notify_interval,
        lease_checkpoint_interval: cfg
            .lease_checkpoint
            .then_some(cfg.lease_checkpoint_interval),
        auto_compaction: match (cfg.auto_compaction_mode, cfg.auto_compaction_retention) {
            (_, CompactionRetention::Off) => AutoCompaction::Off,
            (_, CompactionRetention::Period(d)) => AutoCompaction::Period(d),
            (_, CompactionRetention::Revisions(n)) => AutoCompaction::Revisions(n),
        },
    })))
}

/// The founding members of a new cluster, this member's ID and the cluster ID.
fn found(
    cfg: &ServerConfig,
    initial_cluster: &str,
    token: &str,
) -> Result<(u64, u64, Vec<MemberInfo>), String> {
    founding_members(
        initial_cluster,
        &cfg.name,
        &cfg.initial_advertise_peer_urls,
        token,
    )
}

/// The members `--initial-cluster` and its token found, with IDs derived as etcd derives
/// them: (member `name`'s ID, the cluster ID, the members). Also what a restore writes.
pub fn founding_members(
    initial_cluster: &str,
    name: &str,
    advertise_peer_urls: &[String],
    token: &str,
) -> Result<(u64, u64, Vec<MemberInfo>), String> {
    let initial = bootstrap_members(initial_cluster, name, advertise_peer_urls, token)
        .map_err(|e| e.to_string())?;
    let ids: Vec<u64> = initial.iter().map(|m| m.id).collect();
    let own = initial
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.id)
        .ok_or_else(|| format!("{name} not listed in the initial cluster config"))?;
    let members: Vec<MemberInfo> = initial
        .into_iter()
        .map(|m| MemberInfo {
            id: m.id,
            name: m.name,
            peer_urls: m.peer_urls,
            client_urls: Vec::new(),
            learner: false,
        })
        .collect();
    Ok((own, cluster_id(&ids), members))
}

/// Binds a listen socket; the error reads as Go's (`listen unix localhost:1: bind: ...`).
async fn bind(addr: &BindAddr, replace_stale: bool) -> Result<SocketListener, String> {
    SocketListener::bind(addr, replace_stale)
        .await
        .map_err(|e| format!("listen {addr}: bind: {}", go_io_error(&e)))
}

/// An OS error as Go words it ("address already in use"): Rust's text lowercased at the
/// start and without its "(os error N)" suffix, which is the C library's wording Go's
/// table follows.
pub fn go_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut c = text.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

async fn bind_all(addrs: &[std::net::SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(
            TcpListener::bind(a)
                .await
                .map_err(|e| format!("listen tcp {a}: bind: {e}"))?,
        );
    }
    Ok(out)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("received SIGTERM, shutting down"),
        _ = int.recv() => tracing::info!("received SIGINT, shutting down"),
    }
}
