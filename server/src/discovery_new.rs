//! `keelctl discovery new`: a fresh v2 discovery URL, like `https://discovery.etcd.io/new`,
//! on any server of etcd's v2 keys API — Keel started with `--enable-v2`, or etcd with
//! `--enable-v2=true`. It creates `<prefix>/<token>/_config/size` (only if absent, so an
//! existing token is never reset) and returns `<endpoint>/v2/keys<prefix>/<token>`,
//! the URL every member of the new cluster is started with as `--discovery`.

use std::time::Duration;

/// How long the endpoint has to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Creates a discovery token for a cluster of `size` members under `prefix` on the
/// v2 keys API at `endpoint`; returns the discovery URL.
pub async fn create(endpoint: &str, prefix: &str, size: u32) -> Result<String, String> {
    let base = endpoint_base(endpoint)?;
    let prefix = normalize_prefix(prefix)?;
    let url = format!("{base}/v2/keys{prefix}/{}", token()?);
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .put(format!("{url}/_config/size?prevExist=false"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("value={size}"))
        .send()
        .await
        .map_err(|e| format!("{base}: {}", chain(&e)))?;
    let status = resp.status().as_u16();
    let is_v2 = resp.headers().contains_key("x-etcd-index");
    let body = resp.text().await.unwrap_or_default();
    match status {
        201 => Ok(url),
        _ if !is_v2 => Err(format!(
            "{base} does not serve the v2 keys API (HTTP {status}); start it with --enable-v2"
        )),
        _ => Err(format!(
            "{base} refused the token (HTTP {status}): {}",
            body.trim()
        )),
    }
}

/// An error with its causes, down to the one that says what happened (say, "Connection
/// refused").
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// [`create`] on a runtime of its own (for the command line).
pub fn run(endpoint: &str, prefix: &str, size: u32) -> Result<String, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(create(endpoint, prefix, size))
}

/// `http[s]://host:port` from an endpoint given with or without its scheme.
fn endpoint_base(endpoint: &str) -> Result<String, String> {
    let e = endpoint.trim().trim_end_matches('/');
    let (scheme, rest) = match e.split_once("://") {
        Some((s, r)) => (s, r),
        None => ("http", e),
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "endpoint {endpoint:?}: scheme must be http or https"
        ));
    }
    if rest.is_empty() || rest.contains('/') {
        return Err(format!("endpoint {endpoint:?}: want http://host:port"));
    }
    Ok(format!("{scheme}://{rest}"))
}

/// `/a/b` from `a/b/`, `/a/b` or `/a//b`; `""` for the root. Characters that would
/// need escaping in a URL path are refused rather than guessed at.
fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "/-_.~".contains(c);
    if !prefix.chars().all(ok) {
        return Err(format!(
            "prefix {prefix:?}: use letters, digits and - _ . ~ between slashes"
        ));
    }
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!("prefix {prefix:?}: no . or .. components"));
    }
    Ok(parts.iter().map(|p| format!("/{p}")).collect())
}

/// 128 random bits as 32 lowercase hex digits, as discovery.etcd.io's tokens.
fn token() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::node::MemberInfo;
    use keel_runtime_tokio::member::MemberConfig;
    use tokio::net::TcpListener;

    /// A one-member Keel cluster in this process; its client URL and shutdown switch.
    async fn member(
        dir: &std::path::Path,
        enable_v2: bool,
    ) -> (String, tokio::sync::oneshot::Sender<()>) {
        let client = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", client.local_addr().expect("addr"));
        let me = MemberInfo {
            id: 0x51,
            name: "d".into(),
            peer_urls: vec![format!("http://{}", peer.local_addr().expect("addr"))],
            client_urls: vec![],
            learner: false,
        };
        let cfg = MemberConfig {
            id: me.id,
            cluster_id: 0xd15c,
            name: me.name.clone(),
            data_dir: dir.join("d"),
            wal_dir: None,
            initial_members: vec![me],
            new_cluster: true,
            force_new_cluster: false,
            heartbeat_ms: 50,
            election_ms: 500,
            snapshot_count: 100_000,
            max_snapshots: 1,
            max_wals: 1,
            quota_bytes: 1 << 30,
            max_txn_ops: 128,
            max_request_bytes: 1 << 20,
            client_urls: vec![url.clone()],
            pre_vote: true,
            watch_progress_interval: Duration::from_secs(600),
            lease_checkpoint_interval: None,
            log_tail: 5000,
            auto_compaction: Default::default(),
            enable_v2,
            strict_reconfig: true,
            auth_token: "simple".into(),
            auth_token_ttl: Duration::from_secs(300),
            bcrypt_cost: 4,
            initial_corrupt_check: false,
            corrupt_check_time: Duration::ZERO,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(keel_runtime_tokio::serve::run(
            cfg,
            vec![client],
            vec![peer],
            async move {
                let _ = stopped.await;
            },
            move |_| {
                let _ = ready_tx.send(());
            },
        ));
        tokio::time::timeout(Duration::from_secs(15), ready)
            .await
            .expect("member serves in time")
            .expect("member serves");
        (url, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn creates_a_token_on_keel() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (base, _stop) = member(tmp.path(), true).await;
        let url = create(&base, "/discovery", 3).await.expect("token");
        let token = url
            .strip_prefix(&format!("{base}/v2/keys/discovery/"))
            .expect("url under the prefix");
        assert_eq!(token.len(), 32);
        let size = reqwest::get(format!("{url}/_config/size"))
            .await
            .expect("get")
            .text()
            .await
            .expect("body");
        assert!(
            size.starts_with(&format!(
                "{{\"action\":\"get\",\"node\":{{\"key\":\"/discovery/{token}/_config/size\",\"value\":\"3\","
            )),
            "{size}"
        );
        let tmp2 = tempfile::tempdir().expect("tempdir");
        let (plain, _stop2) = member(tmp2.path(), false).await;
        let e = create(&plain, "/discovery", 3)
            .await
            .expect_err("no v2 API");
        assert!(e.contains("does not serve the v2 keys API"), "{e}");
    }

    #[test]
    fn endpoints_prefixes_and_tokens() {
        assert_eq!(
            endpoint_base("127.0.0.1:2379").as_deref(),
            Ok("http://127.0.0.1:2379")
        );
        assert_eq!(endpoint_base("https://h:1/").as_deref(), Ok("https://h:1"));
        assert!(endpoint_base("unix://x").is_err());
        assert!(endpoint_base("http://h:1/v2").is_err());
        assert_eq!(normalize_prefix("/discovery").as_deref(), Ok("/discovery"));
        assert_eq!(normalize_prefix("a//b/").as_deref(), Ok("/a/b"));
        assert_eq!(normalize_prefix("/").as_deref(), Ok(""));
        assert!(normalize_prefix("/a b").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
        let (a, b) = (token().expect("token"), token().expect("token"));
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}
