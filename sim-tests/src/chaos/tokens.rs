//! Simple auth tokens across members, on the member that ships: a client logs in on one
//! member and at once uses its token on a member that has not applied the Authenticate
//! entry yet (it was cut off, and is catching up). etcd's rule, which keel's members
//! share through `keel_core::auth::SimpleTokens`: such a member waits until it has
//! applied the entry the token names, then honours the token.

use std::time::Duration;

use bytes::Bytes;
use keel_core::auth::AuthCommand;
use keel_runtime_sim::api::{ClientOp, ClientReply};
use keel_runtime_sim::{Bug, Cluster, ClusterConfig};
use madsim::runtime::{Handle, Runtime};

use super::workload::{client_ip, Caller};

/// Runs the scenario with `seed` (and `bug` planted); Err says what went wrong.
pub fn token_on_a_lagging_member(seed: u64, bug: Option<Bug>) -> Result<(), String> {
    let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
    rt.set_time_limit(Duration::from_secs(120));
    rt.block_on(async move {
        let cluster = Cluster::start(&ClusterConfig {
            bug,
            ..ClusterConfig::default()
        });
        let node = Handle::current().create_node().ip(client_ip(1)).build();
        node.spawn(scenario(cluster))
            .await
            .map_err(|e| format!("the client task failed: {e}"))?
    })
}

async fn scenario(cluster: Cluster) -> Result<(), String> {
    let mut c = Caller::bind().await.ok_or("client endpoint")?;
    madsim::time::sleep(Duration::from_secs(3)).await;
    let leader = leader_index(&cluster)?;
    // Auth on: a root user with the root role (etcd's prerequisite), and alice.
    for change in [
        AuthCommand::UserAdd {
            name: "root".into(),
            password_hash: String::new(),
            no_password: true,
        },
        AuthCommand::UserGrantRole {
            user: "root".into(),
            role: "root".into(),
        },
        // A password is needed to log in (the gRPC layer checks it; here nobody does).
        AuthCommand::UserAdd {
            name: "alice".into(),
            password_hash: "$2a$10$not.checked.in.the.simulation".into(),
            no_password: false,
        },
        AuthCommand::UserGrantRole {
            user: "alice".into(),
            role: "root".into(),
        },
        AuthCommand::Enable,
    ] {
        let what = format!("{change:?}");
        match c.call(leader, ClientOp::AuthChange(change)).await {
            Some(ClientReply::AuthChanged) => {}
            other => return Err(format!("{what}: {other:?}")),
        }
    }
    // A member cut off from the others misses the login...
    let lagging = (leader + 1) % cluster.len();
    cluster.isolate(lagging);
    let token = match c
        .call(
            leader,
            ClientOp::Authenticate {
                user: "alice".into(),
            },
        )
        .await
    {
        Some(ClientReply::Token(t)) => t,
        other => return Err(format!("login: {other:?}")),
    };
    // ...and is asked with the token before it has caught up: the cut heals while the
    // request waits, so the member applies the login and then serves the put.
    let heal = async {
        madsim::time::sleep(Duration::from_millis(300)).await;
        cluster.heal();
    };
    let put = ClientOp::Put {
        key: Bytes::from_static(b"k"),
        value: Bytes::from_static(b"v"),
        lease: 0,
    };
    let (reply, ()) = futures_join(c.call_as(lagging, put, Some(token.clone())), heal).await;
    match reply {
        Some(ClientReply::Put { .. }) => Ok(()),
        other => Err(format!(
            "a put with a fresh token on a member catching up: {other:?}"
        )),
    }
}

/// Both futures, concurrently.
async fn futures_join<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future,
    B: std::future::Future,
{
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none() {
            if let std::task::Poll::Ready(v) = a.as_mut().poll(cx) {
                ra = Some(v);
            }
        }
        if rb.is_none() {
            if let std::task::Poll::Ready(v) = b.as_mut().poll(cx) {
                rb = Some(v);
            }
        }
        match (ra.take(), rb.take()) {
            (Some(x), Some(y)) => std::task::Poll::Ready((x, y)),
            (x, y) => {
                ra = x;
                rb = y;
                std::task::Poll::Pending
            }
        }
    })
    .await
}

pub(super) fn leader_index(c: &Cluster) -> Result<usize, String> {
    let leader = c.observer().latest_leader();
    c.ids()
        .iter()
        .position(|id| *id == leader)
        .ok_or_else(|| "no leader after 3 s".to_string())
}
