//! The founding members of a cluster, kept in the data dir (`member/founding`) so a
//! restarted member knows its peers' names and URLs before any snapshot holds the
//! member table, while ignoring `--initial-*` flags as etcd does.
//!
//! Format: one member per line, `<id hex> <name> <peer url>[,<peer url>...]`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use keel_core::node::MemberInfo;

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("founding")
}

/// Writes the founding members atomically and durably (temp file, fsync, rename,
/// directory fsync; the directories above created durably): a restart after a power
/// loss that kept the WAL must find them.
pub fn save(data_dir: &Path, members: &[MemberInfo]) -> std::io::Result<()> {
    let p = path(data_dir);
    let dir = p.parent().unwrap_or(data_dir);
    crate::durable_dir::create_dir_all(dir)?;
    let mut text = String::new();
    for m in members {
        text.push_str(&format!(
            "{:x} {} {}\n",
            m.id,
            m.name,
            m.peer_urls.join(",")
        ));
    }
    let tmp = p.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &p)?;
    crate::durable_dir::sync_dir(dir)
}

/// Reads the founding members; None if the file does not exist.
pub fn load(data_dir: &Path) -> Result<Option<Vec<MemberInfo>>, String> {
    let p = path(data_dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", p.display())),
    };
    let bad = |n: usize| format!("{}: line {n} is malformed", p.display());
    let mut out = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut parts = line.split(' ');
        let (Some(id), Some(name), Some(urls), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(n + 1));
        };
        let id = u64::from_str_radix(id, 16).map_err(|_| bad(n + 1))?;
        out.push(MemberInfo {
            id,
            name: name.to_string(),
            peer_urls: urls.split(',').map(str::to_string).collect(),
            client_urls: Vec::new(),
            learner: false,
        });
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()), Ok(None));
        let members = vec![
            MemberInfo {
                id: 0x8211f1d0f64f3269,
                name: "infra1".into(),
                peer_urls: vec!["http://127.0.0.1:12380".into()],
                ..Default::default()
            },
            MemberInfo {
                id: 0x91bc3c398fb3c146,
                name: "infra2".into(),
                peer_urls: vec!["http://127.0.0.1:22380".into(), "http://[::1]:22380".into()],
                ..Default::default()
            },
        ];
        save(dir.path(), &members).expect("save");
        assert_eq!(load(dir.path()), Ok(Some(members)));
        fs::write(path(dir.path()), "zz infra1 http://x:1\n").expect("write");
        let err = load(dir.path()).expect_err("bad id");
        assert!(err.ends_with("founding: line 1 is malformed"), "{err}");
    }
}
