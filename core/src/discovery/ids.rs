//! Member and cluster IDs, derived bit-for-bit as etcd derives them.
//!
//! The IDs travel on the wire (response headers, `X-Etcd-Cluster-ID`, member lists) and
//! decide whether two processes believe they are in the same cluster, so a keel member
//! must compute exactly the value an etcd member would from the same flags.

use sha1::{Digest, Sha1};

/// The ID of a member with `peer_urls` in a cluster bootstrapped with `token`.
///
/// etcd sorts the URL strings, concatenates them, appends the token and, for a runtime
/// `member add`, the current Unix time in decimal (`now_unix`); the ID is the first
/// 8 bytes of the SHA-1 of that, big-endian. The time makes a re-added member with the
/// same URLs a different member, so stale messages addressed to the old one are dropped.
pub fn member_id(peer_urls: &[String], token: &str, now_unix: Option<u64>) -> u64 {
    let mut sorted: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for url in sorted {
        hasher.update(url.as_bytes());
    }
    hasher.update(token.as_bytes());
    if let Some(now) = now_unix {
        hasher.update(now.to_string().as_bytes());
    }
    first_8_bytes(&hasher.finalize())
}

/// The ID of a cluster whose initial members have `member_ids` (any order).
///
/// etcd sorts the IDs, writes each as 8 big-endian bytes, and takes the first 8 bytes
/// of the SHA-1 of the concatenation, big-endian.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut sorted = member_ids.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for id in sorted {
        hasher.update(id.to_be_bytes());
    }
    first_8_bytes(&hasher.finalize())
}

fn first_8_bytes(digest: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    // Expected values below were computed independently with python3's hashlib
    // (and, for the three-member cluster, match ETCD-FACTS's check vector).

    #[test]
    fn etcd_check_vector_three_members() {
        let token = "etcd-cluster-1";
        let infra1 = member_id(&urls(&["http://127.0.0.1:12380"]), token, None);
        let infra2 = member_id(&urls(&["http://127.0.0.1:22380"]), token, None);
        let infra3 = member_id(&urls(&["http://127.0.0.1:32380"]), token, None);
        assert_eq!(format!("{infra1:x}"), "8211f1d0f64f3269");
        assert_eq!(format!("{infra2:x}"), "91bc3c398fb3c146");
        assert_eq!(format!("{infra3:x}"), "fd422379fda50e48");
        assert_eq!(cluster_id(&[infra1, infra2, infra3]), 0xef37_ad9d_c622_a7c4);
        // The member order handed in does not matter.
        assert_eq!(cluster_id(&[infra3, infra1, infra2]), 0xef37_ad9d_c622_a7c4);
    }

    #[test]
    fn etcd_default_single_member() {
        let id = member_id(&urls(&["http://localhost:2380"]), "etcd-cluster", None);
        assert_eq!(id, 0x8e9e_05c5_2164_694d);
        assert_eq!(cluster_id(&[id]), 0xcdf8_1819_4e3a_8c32);
    }

    #[test]
    fn peer_urls_are_sorted_and_time_is_appended() {
        let a = member_id(
            &urls(&["http://10.0.0.2:2380", "http://10.0.0.1:2380"]),
            "etcd-cluster",
            Some(1_700_000_000),
        );
        let b = member_id(
            &urls(&["http://10.0.0.1:2380", "http://10.0.0.2:2380"]),
            "etcd-cluster",
            Some(1_700_000_000),
        );
        assert_eq!(a, b);
        assert_eq!(a, 0xb3b3_387b_b5b0_fa9c);
        let without_time = member_id(
            &urls(&["http://10.0.0.1:2380", "http://10.0.0.2:2380"]),
            "etcd-cluster",
            None,
        );
        assert_ne!(a, without_time);
    }
}
