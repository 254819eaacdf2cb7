//! `keel gateway start`: etcd's L4 gateway (`etcd gateway start`), a TCP proxy that
//! forwards each client connection, bytes unchanged, to one of `--endpoints` in round
//! robin, passing over for `--retry-delay` an endpoint that refused. The forwarding is
//! the discovery fallback's proxy ([`crate::proxy::run_fixed`]); this module is etcd's
//! command line (cobra's help and error shapes, etcd's checks and messages).
//!
//! With `--discovery-srv <domain>` the endpoints come from the SRV records
//! `_etcd-client-ssl[-<name>]._tcp.<domain>` and `_etcd-client[-<name>]._tcp.<domain>`
//! instead ([`keel_core::discovery::srv_clients`]), picked by their priority and weight.
//! As in etcd 3.4, unless `--insecure-discovery` only https endpoints that accept a TCP
//! connection are kept (`--trusted-ca-file` is read but no TLS handshake is made), and
//! when none is kept the gateway falls back to `--endpoints`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use keel_core::discovery::{
    client_services, insecure_endpoint, srv_clients, SrvAnswers, SrvClient,
};
use keel_runtime_tokio::go_duration;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::discovery_srv::{entropy, Dns};
use crate::proxy::Remote;

/// How long etcd's endpoint validation waits for each TCP connection.
const VALIDATE_DIAL_TIMEOUT: Duration = Duration::from_secs(5);

const GATEWAY_HELP: &str = "gateway related command

Usage:
  etcd gateway [command]

Available Commands:
  start       start the gateway

Flags:
  -h, --help   help for gateway

Use \"etcd gateway [command] --help\" for more information about a command.
";

const START_USAGE: &str = "Usage:
  etcd gateway start [flags]

Flags:
      --discovery-srv string        DNS domain used to bootstrap initial cluster
      --discovery-srv-name string   service name to query when using DNS discovery
      --endpoints strings           comma separated etcd cluster endpoints (default [127.0.0.1:2379])
  -h, --help                        help for start
      --insecure-discovery          accept insecure SRV records
      --listen-addr string          listen address (default \"127.0.0.1:23790\")
      --retry-delay duration        duration of delay before retrying failed endpoints (default 1m0s)
      --trusted-ca-file string      path to the client server TLS CA file for verifying the discovered endpoints when discovery-srv is provided.
";

/// The flags of `gateway start`.
#[derive(Debug, PartialEq, Eq)]
pub struct GatewayFlags {
    /// `--listen-addr`.
    pub listen_addr: String,
    /// `--endpoints`, as given (schemes not yet stripped).
    pub endpoints: Vec<String>,
    /// `--discovery-srv`.
    pub discovery_srv: String,
    /// `--discovery-srv-name`.
    pub discovery_srv_name: String,
    /// `--insecure-discovery`.
    pub insecure_discovery: bool,
    /// `--trusted-ca-file`.
    pub trusted_ca_file: String,
    /// `--retry-delay`.
    pub retry_delay: Duration,
}

impl Default for GatewayFlags {
    fn default() -> GatewayFlags {
        GatewayFlags {
            listen_addr: "127.0.0.1:23790".into(),
            endpoints: vec!["127.0.0.1:2379".into()],
            discovery_srv: String::new(),
            discovery_srv_name: String::new(),
            insecure_discovery: false,
            trusted_ca_file: String::new(),
            retry_delay: Duration::from_secs(60),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    /// Print this text on stdout and exit 0 (help).
    Help(String),
    /// Start the gateway.
    Start(GatewayFlags),
}

/// A command-line error: cobra prints `Error: <msg>`, the usage, a blank line, then
/// etcd prints the message again without a newline; exit status 1.
#[derive(Debug, PartialEq, Eq)]
pub struct FlagError(pub String);

impl FlagError {
    /// The whole text written to stderr.
    pub fn text(&self) -> String {
        format!("Error: {}\n{START_USAGE}\n{}", self.0, self.0)
    }
}

/// Parses the arguments after `gateway` as cobra and pflag do.
pub fn parse(args: &[String]) -> Result<Invocation, FlagError> {
    if args.first().map(String::as_str) != Some("start") {
        // `etcd gateway`, `etcd gateway --help` and unknown subcommands print the help.
        return Ok(Invocation::Help(GATEWAY_HELP.into()));
    }
    let mut f = GatewayFlags::default();
    let mut endpoints_set = false;
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        if a == "--" {
            break;
        }
        if a == "-h" || a == "--help" {
            return Ok(Invocation::Help(start_help()));
        }
        let Some(flag) = a.strip_prefix("--") else {
            if let Some(short) = a.strip_prefix('-').and_then(|s| s.chars().next()) {
                return Err(FlagError(format!(
                    "unknown shorthand flag: '{short}' in {a}"
                )));
            }
            continue; // positional arguments are ignored, as by etcd's command
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "insecure-discovery" {
            let v = inline.as_deref().unwrap_or("true");
            f.insecure_discovery = parse_bool(v).ok_or_else(|| {
                FlagError(format!(
                    "invalid argument \"{v}\" for \"--{name}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax"
                ))
            })?;
            continue;
        }
        let known = [
            "listen-addr",
            "endpoints",
            "discovery-srv",
            "discovery-srv-name",
            "trusted-ca-file",
            "retry-delay",
        ];
        if !known.contains(&name) {
            return Err(FlagError(format!("unknown flag: --{name}")));
        }
        let value = match inline {
            Some(v) => v,
            None => rest
                .next()
                .cloned()
                .ok_or_else(|| FlagError(format!("flag needs an argument: --{name}")))?,
        };
        match name {
            "listen-addr" => f.listen_addr = value,
            "discovery-srv" => f.discovery_srv = value,
            "discovery-srv-name" => f.discovery_srv_name = value,
            "trusted-ca-file" => f.trusted_ca_file = value,
            "retry-delay" => {
                f.retry_delay = go_duration::parse(&value).map_err(|e| {
                    FlagError(format!(
                        "invalid argument \"{value}\" for \"--{name}\" flag: {e}"
                    ))
                })?
            }
            _ => {
                // pflag's string slice: the first use replaces the default, later ones
                // append; each value is a comma-separated list.
                if !endpoints_set {
                    f.endpoints.clear();
                    endpoints_set = true;
                }
                f.endpoints.extend(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
            }
        }
    }
    Ok(Invocation::Start(f))
}

fn start_help() -> String {
    // cobra: the command's short description, a blank line, then the usage.
    format!("start the gateway\n\n{START_USAGE}")
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// etcd's `stripSchema`: `scheme://host:port` becomes `host:port`; anything else (a bare
/// `host:port`, which Go's URL parser refuses or reads as an opaque URL) is kept.
fn strip_scheme(ep: &str) -> &str {
    match ep.split_once("://") {
        Some((scheme, rest)) if !scheme.is_empty() && !scheme.contains(['/', ':']) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            if host.is_empty() {
                ep
            } else {
                host
            }
        }
        _ => ep,
    }
}

/// Go's `net.SplitHostPort`, enough for endpoints: `host:port` or `[v6]:port`.
fn split_host_port(hp: &str) -> Option<(&str, &str)> {
    if let Some(b) = hp.strip_prefix('[') {
        let (host, after) = b.split_once(']')?;
        return Some((host, after.strip_prefix(':')?));
    }
    let (host, port) = hp.rsplit_once(':')?;
    (!host.contains(':')).then_some((host, port))
}

/// Why the gateway did not start: the text etcd prints (to stdout for its checks, to
/// stderr for a listen failure), without the trailing newline decision.
#[derive(Debug, PartialEq, Eq)]
pub enum StartError {
    /// Printed on stdout as is.
    Stdout(String),
    /// Printed on stderr with a newline.
    Stderr(String),
}

/// Runs `keel gateway ...` (`args` are the arguments after `gateway`) until a signal;
/// the exit status is etcd's.
pub fn main(args: &[String]) -> std::process::ExitCode {
    use std::io::Write;
    use std::process::ExitCode;
    let f = match parse(args) {
        Ok(Invocation::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Start(f)) => f,
        Err(e) => {
            eprint!("{}", e.text());
            return ExitCode::FAILURE;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keel: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let (discovered, dns) = if f.discovery_srv.is_empty() {
            (Vec::new(), None)
        } else {
            let dns = Arc::new(Dns::from_env().map_err(StartError::Stderr)?);
            (discover(&f, &dns).await?, Some(dns))
        };
        let remotes = remotes(&f, &discovered, dns.as_deref()).await?;
        let listener = tokio::net::TcpListener::bind(&f.listen_addr)
            .await
            .map_err(|e| {
                StartError::Stderr(format!(
                    "listen tcp {}: bind: {}",
                    f.listen_addr,
                    crate::launch::go_io_error(&e)
                ))
            })?;
        let addrs: Vec<&str> = remotes.iter().map(|r| r.addr.as_str()).collect();
        tracing::info!(endpoints = %addrs.join(","), "ready to proxy client requests");
        keel_runtime_tokio::serve::notify_systemd_ready();
        crate::proxy::run_fixed(
            remotes,
            f.retry_delay,
            listener,
            dns,
            crate::launch::shutdown_signal(),
        )
        .await
        .map_err(StartError::Stderr)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Stdout(text)) => {
            print!("{text}");
            let _ = std::io::stdout().flush();
            ExitCode::FAILURE
        }
        Err(StartError::Stderr(text)) => {
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

/// etcd's `discoverEndpoints`: the client endpoints the SRV records of
/// `--discovery-srv` name; unless `--insecure-discovery`, only the https ones that
/// accept a TCP connection. Empty when none is kept (the gateway then uses
/// `--endpoints`, as etcd does).
async fn discover(f: &GatewayFlags, dns: &Dns) -> Result<Vec<SrvClient>, StartError> {
    let [https, http] = client_services(&f.discovery_srv, &f.discovery_srv_name);
    let answers = SrvAnswers {
        https: dns.srv(&https).await,
        http: dns.srv(&http).await,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(entropy());
    let clients = srv_clients(&answers, &mut rng).map_err(StartError::Stderr)?;
    let urls = || {
        clients
            .iter()
            .map(|c| c.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    tracing::info!(srv_server = %f.discovery_srv, endpoints = %urls(), "discovered cluster from SRV");
    if f.insecure_discovery {
        return Ok(clients);
    }
    tracing::info!(srv_server = %f.discovery_srv, endpoints = %urls(), "validating discovered SRV endpoints");
    let (kept, errors) = validate(clients, &f.trusted_ca_file, dns).await;
    let kept_urls: Vec<&str> = kept.iter().map(|c| c.url.as_str()).collect();
    if errors.is_empty() {
        tracing::info!(srv_server = %f.discovery_srv, endpoints = %kept_urls.join(","), "using validated discovered SRV endpoints");
    } else {
        tracing::warn!(srv_server = %f.discovery_srv, endpoints = %kept_urls.join(","), error = %errors.join(","), "failed to validate discovered endpoints");
    }
    Ok(kept)
}

/// etcd's `transport.ValidateSecureEndpoints`: the https endpoints a TCP connection
/// reaches within five seconds, and why each other one was dropped. The CA file is
/// read first, as etcd builds its TLS configuration first; if that fails, none is kept.
async fn validate(
    clients: Vec<SrvClient>,
    ca_file: &str,
    dns: &Dns,
) -> (Vec<SrvClient>, Vec<String>) {
    if !ca_file.is_empty() {
        if let Err(e) = std::fs::read(ca_file) {
            let e = format!("open {ca_file}: {}", crate::launch::go_io_error(&e));
            return (Vec::new(), vec![e]);
        }
    }
    let mut kept = Vec::new();
    let mut errors = Vec::new();
    for c in clients {
        if let Some(e) = insecure_endpoint(&c.url) {
            errors.push(e);
            continue;
        }
        let addr = join_host_port(&c.record.target, c.record.port);
        let dialed =
            tokio::time::timeout(VALIDATE_DIAL_TIMEOUT, crate::proxy::dial(&addr, Some(dns)));
        match dialed.await {
            Ok(Ok(_)) => kept.push(c),
            Ok(Err(e)) => errors.push(format!(
                "{:?} failed to dial (dial tcp {addr}: {})",
                c.url,
                crate::launch::go_io_error(&e)
            )),
            Err(_) => errors.push(format!(
                "{:?} failed to dial (dial tcp {addr}: i/o timeout)",
                c.url
            )),
        }
    }
    (kept, errors)
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Resolves a host as Go's `net.LookupHost` does for these checks: through `dns` when
/// discovering (SRV targets may be names only that server knows), else the system's.
async fn lookup(host: &str, dns: Option<&Dns>) -> Option<Vec<IpAddr>> {
    if let Some(dns) = dns {
        return dns.ips(host).await.ok().filter(|ips| !ips.is_empty());
    }
    let addrs = tokio::net::lookup_host((host, 0)).await.ok()?;
    let ips: Vec<_> = addrs.map(|a: SocketAddr| a.ip()).collect();
    (!ips.is_empty()).then_some(ips)
}

/// The endpoints `--endpoints` names (`host:port`), after etcd's checks of them and of
/// the listen address.
pub async fn endpoints(f: &GatewayFlags) -> Result<Vec<String>, StartError> {
    let remotes = remotes(f, &[], None).await?;
    Ok(remotes.into_iter().map(|r| r.addr).collect())
}

/// The remotes to forward to: the `discovered` ones if any, else `--endpoints`; after
/// etcd's checks of them and of the listen address (host names resolved through `dns`
/// if given).
async fn remotes(
    f: &GatewayFlags,
    discovered: &[SrvClient],
    dns: Option<&Dns>,
) -> Result<Vec<Remote>, StartError> {
    let mut targets = Vec::new();
    if discovered.is_empty() {
        for ep in &f.endpoints {
            let ep = strip_scheme(ep);
            let Some((host, port)) = split_host_port(ep) else {
                return Err(StartError::Stdout(format!("error parsing endpoint {ep:?}")));
            };
            // Go's Sscanf("%d") into a uint16: leading digits, wrapping as Go's does not
            // matter for ports that can be dialled.
            let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
            let port: u16 = digits.parse().unwrap_or(0);
            targets.push((host.to_string(), port, Remote::plain(String::new())));
        }
    } else {
        for c in discovered {
            let remote = Remote {
                addr: String::new(),
                priority: c.record.priority,
                weight: c.record.weight,
            };
            targets.push((c.record.target.clone(), c.record.port, remote));
        }
    }
    let Some((lhost, lport)) = split_host_port(&f.listen_addr) else {
        return Err(StartError::Stdout(format!(
            "failed to validate listen address: {}\n",
            f.listen_addr
        )));
    };
    let Some(laddrs) = lookup(lhost, dns).await else {
        return Err(StartError::Stdout(format!(
            "failed to resolve listen host: {lhost}\n"
        )));
    };
    for (host, port, _) in &targets {
        let Some(eaddrs) = lookup(host, dns).await else {
            return Err(StartError::Stdout(format!(
                "failed to resolve endpoint host: {host}\n"
            )));
        };
        if port.to_string() != lport {
            continue;
        }
        if let Some(ea) = eaddrs.iter().find(|a| laddrs.contains(a)) {
            return Err(StartError::Stdout(format!(
                "SRV or endpoint ({host}:{port}->{ea}:{port}) should not resolve to the gateway listen addr ({})\n",
                f.listen_addr
            )));
        }
    }
    if targets.is_empty() {
        return Err(StartError::Stdout("no endpoints found\n".into()));
    }
    Ok(targets
        .into_iter()
        .map(|(host, port, mut remote)| {
            remote.addr = join_host_port(&host, port);
            remote
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn flags_as_cobra_reads_them() {
        let Ok(Invocation::Start(f)) = parse(&args(
            "start --listen-addr=127.0.0.1:1 --endpoints a:1,b:2 --endpoints c:3 --retry-delay 2s --insecure-discovery",
        )) else {
            panic!("not a start");
        };
        assert_eq!(f.listen_addr, "127.0.0.1:1");
        assert_eq!(f.endpoints, ["a:1", "b:2", "c:3"]);
        assert_eq!(f.retry_delay, Duration::from_secs(2));
        assert!(f.insecure_discovery);
        assert_eq!(
            parse(&args("start")),
            Ok(Invocation::Start(GatewayFlags::default()))
        );
        assert_eq!(
            parse(&args("start --help")),
            Ok(Invocation::Help(start_help()))
        );
        assert_eq!(parse(&args("")), Ok(Invocation::Help(GATEWAY_HELP.into())));
        assert_eq!(
            parse(&args("foo")),
            Ok(Invocation::Help(GATEWAY_HELP.into()))
        );
    }

    #[test]
    fn flag_errors_as_cobra_words_them() {
        let e = |s: &str| parse(&args(s)).unwrap_err().0;
        assert_eq!(e("start --bogus"), "unknown flag: --bogus");
        assert_eq!(
            e("start --retry-delay"),
            "flag needs an argument: --retry-delay"
        );
        assert_eq!(
            e("start --retry-delay xx"),
            "invalid argument \"xx\" for \"--retry-delay\" flag: time: invalid duration \"xx\""
        );
        assert_eq!(
            e("start -listen-addr x"),
            "unknown shorthand flag: 'l' in -listen-addr"
        );
        let text = FlagError("unknown flag: --bogus".into()).text();
        assert!(text
            .starts_with("Error: unknown flag: --bogus\nUsage:\n  etcd gateway start [flags]\n"));
        assert!(text.ends_with("is provided.\n\nunknown flag: --bogus"));
    }

    #[test]
    fn endpoints_lose_their_scheme() {
        assert_eq!(strip_scheme("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(strip_scheme("https://h:1/x"), "h:1");
        assert_eq!(strip_scheme("127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(split_host_port("[::1]:5"), Some(("::1", "5")));
        assert_eq!(split_host_port("127.0.0.1"), None);
    }

    #[tokio::test]
    async fn etcds_start_checks() {
        let f = |eps: &str, listen: &str| GatewayFlags {
            endpoints: args(eps),
            listen_addr: listen.into(),
            ..GatewayFlags::default()
        };
        assert_eq!(
            endpoints(&f("127.0.0.1", "127.0.0.1:4190")).await,
            Err(StartError::Stdout(
                "error parsing endpoint \"127.0.0.1\"".into()
            ))
        );
        assert_eq!(
            endpoints(&f("127.0.0.1:1", "127.0.0.1")).await,
            Err(StartError::Stdout(
                "failed to validate listen address: 127.0.0.1\n".into()
            ))
        );
        assert_eq!(
            endpoints(&f("http://127.0.0.1:4190", "127.0.0.1:4190")).await,
            Err(StartError::Stdout("SRV or endpoint (127.0.0.1:4190->127.0.0.1:4190) should not resolve to the gateway listen addr (127.0.0.1:4190)\n".into()))
        );
        assert_eq!(
            endpoints(&f("http://127.0.0.1:1 [::1]:2", "127.0.0.1:4190")).await,
            Ok(vec!["127.0.0.1:1".to_string(), "[::1]:2".to_string()])
        );
    }
}
