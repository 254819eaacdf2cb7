//! A `keel` process on a lossy filesystem and a minimal client for it: the JSON gateway
//! over plain HTTP/1.1, so these tests need no async runtime or gRPC stack.

#![allow(dead_code)] // Each test file uses its own part.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The keel binary to test: `KEEL_BIN`, or the workspace's release build. None (with
/// the reason printed) when the test must skip; with `LOSSYFS_REQUIRE=1` (CI) a
/// missing prerequisite fails instead.
pub fn prerequisites() -> Option<PathBuf> {
    let require = std::env::var("LOSSYFS_REQUIRE").is_ok_and(|v| v == "1");
    let skip = |why: String| {
        assert!(!require, "LOSSYFS_REQUIRE=1 but {why}");
        eprintln!("skipped: {why}");
        None
    };
    if let Some(why) = keel_lossyfs::unavailable() {
        return skip(why);
    }
    let bin = std::env::var_os("KEEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/keel"));
    if !bin.exists() {
        return skip(format!(
            "{} is missing (cargo build --release -p keel-server --bin keel)",
            bin.display()
        ));
    }
    Some(bin)
}

/// One member's command line and process.
pub struct Member {
    pub bin: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    pub client_port: u16,
    pub peer_port: u16,
    pub initial_cluster: String,
    pub extra: Vec<String>,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    pub fn start(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.bin)
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn keel");
        self.child = Some(child);
    }

    /// kill -9, and wait for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the process has exited by itself.
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(25)..].join("\n")
    }

    /// Waits until the member answers a serializable read (it has started and
    /// recovered); panics with its log if it does not within `limit`.
    pub fn wait_ready(&mut self, limit: Duration) {
        let t = Instant::now();
        while t.elapsed() < limit {
            if self.exited() {
                panic!("{} exited while starting:\n{}", self.name, self.log_tail());
            }
            if let Ok((200, body)) = http(
                self.client_port,
                "/v3/kv/range",
                r#"{"key":"AA==","serializable":true}"#,
            ) {
                if body.contains("header") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} did not become ready in {limit:?}:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 POST; (status, body).
pub fn http(port: u16, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:.100}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked or not, the JSON is in there; callers only search it.
    Ok((status, body.to_string()))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

pub fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| B64.iter().position(|b| *b == c).map(|p| p as u32);
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let vals: Vec<u32> = chunk.iter().filter_map(|c| val(*c)).collect();
        let mut n = 0;
        for (i, v) in vals.iter().enumerate() {
            n |= v << (18 - 6 * i);
        }
        for i in 0..vals.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The revision in a response header.
pub fn revision(body: &str) -> Option<u64> {
    let at = body.find("\"revision\":")? + "\"revision\":".len();
    let rest = body[at..].trim_start_matches('"');
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// A put; Ok(revision) only when keel acknowledged it.
pub fn put(port: u16, key: &str, value: &[u8]) -> Result<u64, String> {
    let body = format!(
        r#"{{"key":"{}","value":"{}"}}"#,
        b64(key.as_bytes()),
        b64(value)
    );
    match http(port, "/v3/kv/put", &body) {
        Ok((200, b)) => revision(&b).ok_or(b),
        Ok((s, b)) => Err(format!("{s}: {b:.200}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The first `prefix` bytes of a key's value (linearizable read); None if absent.
pub fn get_prefix(port: u16, key: &str, prefix: usize) -> Result<Option<Vec<u8>>, String> {
    let body = format!(r#"{{"key":"{}"}}"#, b64(key.as_bytes()));
    let (status, b) = http(port, "/v3/kv/range", &body).map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {b:.200}"));
    }
    let Some(at) = b.find("\"value\":\"") else {
        return Ok(None);
    };
    let v = &b[at + 9..];
    let end = v.find('"').unwrap_or(v.len());
    let take = (prefix.div_ceil(3) * 4).min(end);
    Ok(Some(unb64(&v[..take])))
}

#[test]
fn base64_round_trips() {
    for n in 0..10 {
        let data: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
        assert_eq!(unb64(&b64(&data)), data);
    }
    assert_eq!(b64(b"foo"), "Zm9v");
}
