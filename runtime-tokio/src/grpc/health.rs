//! `grpc.health.v1.Health`: SERVING while the member knows a leader, as etcd's gRPC
//! health server reports it.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::member::MemberHandle;
use crate::pb::grpc_health_v1::health_check_response::ServingStatus;
use crate::pb::grpc_health_v1::{self as pb, HealthCheckRequest, HealthCheckResponse};

/// The Health service.
pub struct HealthService {
    m: MemberHandle,
}

impl HealthService {
    /// Health of member `m`.
    pub fn new(m: MemberHandle) -> Self {
        HealthService { m }
    }
}

fn serving(m: &MemberHandle) -> i32 {
    if m.status.borrow().leader != 0 {
        ServingStatus::Serving as i32
    } else {
        ServingStatus::NotServing as i32
    }
}

fn known(service: &str) -> Result<(), Status> {
    // etcd registers the empty service name and "etcdserverpb.KV"-style names alike.
    if service.is_empty() || service.starts_with("etcdserverpb.") {
        Ok(())
    } else {
        Err(Status::not_found("unknown service"))
    }
}

#[tonic::async_trait]
impl pb::health_server::Health for HealthService {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        known(&req.into_inner().service)?;
        Ok(Response::new(HealthCheckResponse {
            status: serving(&self.m),
        }))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        known(&req.into_inner().service)?;
        let (tx, rx) = mpsc::channel(4);
        let m = self.m.clone();
        tokio::spawn(async move {
            let mut status = m.status.clone();
            let mut last = -1;
            loop {
                let now = serving(&m);
                if now != last {
                    last = now;
                    if tx
                        .send(Ok(HealthCheckResponse { status: now }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                tokio::select! {
                    r = status.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
