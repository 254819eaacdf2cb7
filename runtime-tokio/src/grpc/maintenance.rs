//! `etcdserverpb.Maintenance`: Status, Alarm, Hash, HashKV, Snapshot, Defragment,
//! MoveLeader. As in etcd 3.4, Alarm, Defragment, MoveLeader and Snapshot answers carry
//! no response header (clients, and the `etcd-client` crate's tests, check for that).

use super::authz::{check, maintenance_denied};
use super::{server_status, Grpc};
use std::time::Duration;

use keel_core::auth::AuthQuery;
use keel_core::node::{alarm, Command, Outcome};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{header, mismatched, mvcc_status};
use crate::member::{MemberHandle, ServerError};
use crate::pb::etcdserverpb as pb;
use crate::version::ETCD_SERVER_VERSION;

/// Bytes per Snapshot stream message (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 32 << 10;

/// Writes the etcd database of `view` and streams it to `tx` in etcd's chunks, its
/// SHA-256 in the last message (what `etcdctl snapshot restore` checks).
fn stream_snapshot(
    view: keel_core::etcd::backend::Backend,
    dir: &std::path::Path,
    tx: &mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
    copied: Duration,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let started = std::time::Instant::now();
    let (file, size) = crate::etcd_db::write_backend_file(view, dir)?;
    let written = started.elapsed();
    let mut hash = Sha256::new();
    let mut buf = vec![0; SNAPSHOT_CHUNK];
    let mut sent = 0u64;
    while sent < size {
        let n = (size - sent).min(SNAPSHOT_CHUNK as u64) as usize;
        file.read_exact_at(&mut buf[..n], sent)?;
        hash.update(&buf[..n]);
        sent += n as u64;
        let msg = pb::SnapshotResponse {
            header: None,
            // As etcd: the bytes of the database still to come (the hash is not counted).
            remaining_bytes: size - sent,
            blob: bytes::Bytes::copy_from_slice(&buf[..n]),
        };
        if tx.blocking_send(Ok(msg)).is_err() {
            return Ok(());
        }
    }
    let last = pb::SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: hash.finalize().to_vec().into(),
    };
    let _ = tx.blocking_send(Ok(last));
    tracing::info!(
        size,
        copy_ms = copied.as_millis() as u64,
        write_ms = written.as_millis() as u64,
        total_ms = (copied + started.elapsed()).as_millis() as u64,
        "sent database snapshot to client"
    );
    Ok(())
}

/// The Maintenance service.
pub struct MaintenanceService {
    m: MemberHandle,
}

impl MaintenanceService {
    /// Maintenance over member `m`.
    pub fn new(m: MemberHandle) -> Self {
        MaintenanceService { m }
    }
}

fn alarm_members(alarms: Vec<(u64, i32)>) -> Vec<pb::AlarmMember> {
    alarms
        .into_iter()
        .map(|(member_id, alarm)| pb::AlarmMember { member_id, alarm })
        .collect()
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let r = req.into_inner();
        if r.action == 0 {
            let alarms = self.m.alarms().await.grpc()?;
            return Ok(Response::new(pb::AlarmResponse {
                header: None,
                alarms: alarm_members(alarms),
            }));
        }
        let cmd = Command::Alarm {
            action: r.action,
            member: r.member_id,
            alarm: r.alarm,
        };
        match self.m.propose(cmd).await.grpc()? {
            (Outcome::Alarm(alarms), _) => Ok(Response::new(pb::AlarmResponse {
                header: None,
                alarms: alarm_members(alarms),
            })),
            _ => Err(mismatched()),
        }
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let v = self.m.status_view().await.grpc()?;
        // As etcd: "no leader" first, then the alarms.
        let no_leader = (v.leader == 0).then(|| ServerError::NoLeader.to_string());
        let alarms = v
            .alarms
            .iter()
            .map(|(m, a)| format!("memberID:{m} alarm:{} ", alarm::name(*a)));
        let errors = no_leader.into_iter().chain(alarms).collect();
        Ok(Response::new(pb::StatusResponse {
            header: header(&self.m, v.header),
            version: ETCD_SERVER_VERSION.into(),
            db_size: v.db_size,
            leader: v.leader,
            raft_index: v.raft_index,
            raft_term: v.raft_term,
            raft_applied_index: v.applied,
            errors,
            db_size_in_use: v.db_size,
            is_learner: v.is_learner,
        }))
    }

    async fn defragment(
        &self,
        req: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(maintenance_denied)?;
        // The keyspace lives in memory and frees what compaction releases at once:
        // there is no file to defragment.
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    async fn hash(
        &self,
        req: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(maintenance_denied)?;
        let started = std::time::Instant::now();
        let (hash, h) = self.m.state_hash().await.grpc()?;
        self.m.metrics.hash.observe(started.elapsed().as_secs_f64());
        Ok(Response::new(pb::HashResponse {
            header: header(&self.m, h),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(maintenance_denied)?;
        let rev = req.into_inner().revision;
        let started = std::time::Instant::now();
        let (res, compact, h) = self.m.hash_kv(rev).await.grpc()?;
        self.m
            .metrics
            .hash_rev
            .observe(started.elapsed().as_secs_f64());
        let hash = res.map_err(mvcc_status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: header(&self.m, h),
            hash,
            // -1 until the first compaction, as etcd's `compactMainRev`.
            compact_revision: compact,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(maintenance_denied)?;
        // The copy is taken on the member task (the index is cloned, values shared);
        // encoding, writing and hashing happen on a blocking thread.
        let started = std::time::Instant::now();
        let view = self.m.backend_view().await.grpc()?;
        let copied = started.elapsed();
        let dir = self.m.snap_dir.clone();
        let (tx, rx) = mpsc::channel(4);
        let metrics = self.m.metrics.clone();
        tokio::task::spawn_blocking(move || match stream_snapshot(view, &dir, &tx, copied) {
            Ok(()) => metrics
                .backend_snapshot
                .observe(started.elapsed().as_secs_f64()),
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(format!("snapshot: {e}"))));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(
        &self,
        req: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        check(&self.m, &req, AuthQuery::Admin)
            .await?
            .map_err(maintenance_denied)?;
        let target = req.into_inner().target_id;
        self.m.move_leader(target).await.grpc()?;
        // etcd answers once the target leads (or the attempt timed out).
        let mut status = self.m.status.clone();
        let wait = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if status.borrow().leader == target {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        });
        if wait.await.is_err() {
            return Err(server_status(ServerError::Timeout));
        }
        Ok(Response::new(pb::MoveLeaderResponse { header: None }))
    }

    async fn downgrade(
        &self,
        _req: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        Err(Status::unimplemented(
            "keel: cluster downgrade is not supported",
        ))
    }
}
