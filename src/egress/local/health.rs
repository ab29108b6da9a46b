//! gRPC health checking (`grpc.health.v1.Health`) as the protocol
//! describes it: `Check` of a service the gateway does not report is
//! `NOT_FOUND`; `Watch` of one streams `SERVICE_UNKNOWN` and stays open,
//! sending its status once it becomes known (a route added by a reload),
//! and `SERVICE_UNKNOWN` again if it stops being reported.

use futures_util::Stream;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Each reported service's status, shared by every generation: a watch
/// opened before a reload sees the statuses reported after it.
#[derive(Debug)]
pub struct HealthBook {
    /// Reported services, and unknown ones somebody watches.
    statuses: Mutex<HashMap<String, watch::Sender<ServingStatus>>>,
}

impl Default for HealthBook {
    fn default() -> Self {
        // The server as a whole (`""`) serves while the process does.
        let (serving, _) = watch::channel(ServingStatus::Serving);
        HealthBook {
            statuses: Mutex::new(HashMap::from([(String::new(), serving)])),
        }
    }
}

impl HealthBook {
    fn statuses(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<ServingStatus>>> {
        self.statuses.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports `service` as `status`; watchers see it when it changes.
    pub fn set(&self, service: &str, status: ServingStatus) {
        let mut statuses = self.statuses();
        match statuses.get(service) {
            Some(tx) => {
                tx.send_if_modified(|now| std::mem::replace(now, status) != status);
            }
            None => {
                statuses.insert(service.to_owned(), watch::channel(status).0);
            }
        }
    }

    /// Stops reporting `service`: `Check` finds it no more, and its
    /// watchers are told `SERVICE_UNKNOWN`.
    pub fn clear(&self, service: &str) {
        let mut statuses = self.statuses();
        if let Some(tx) = statuses.get(service) {
            if tx.receiver_count() == 0 {
                statuses.remove(service);
            } else {
                tx.send_replace(ServingStatus::ServiceUnknown);
            }
        }
    }

    fn status(&self, service: &str) -> Option<ServingStatus> {
        let status = *self.statuses().get(service)?.borrow();
        (status != ServingStatus::ServiceUnknown).then_some(status)
    }

    fn watch(&self, service: &str) -> watch::Receiver<ServingStatus> {
        let mut statuses = self.statuses();
        if let Some(tx) = statuses.get(service) {
            return tx.subscribe();
        }
        // Unknown services nobody watches any more are forgotten, so
        // watching made-up names cannot grow the book.
        statuses.retain(|_, tx| {
            *tx.borrow() != ServingStatus::ServiceUnknown || tx.receiver_count() > 0
        });
        let (tx, rx) = watch::channel(ServingStatus::ServiceUnknown);
        statuses.insert(service.to_owned(), tx);
        rx
    }

    /// The `grpc.health.v1.Health` service over this book.
    pub fn server(self: &Arc<Self>) -> HealthServer<HealthService> {
        HealthServer::new(HealthService(self.clone()))
    }
}

pub struct HealthService(Arc<HealthBook>);

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match self.0.status(service) {
            Some(status) => Ok(Response::new(HealthCheckResponse {
                status: status as i32,
            })),
            None => Err(Status::not_found(format!(
                "the gateway reports no service {service:?}"
            ))),
        }
    }

    type WatchStream = Statuses;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Statuses>, Status> {
        let statuses =
            tokio_stream::wrappers::WatchStream::new(self.0.watch(&request.get_ref().service));
        Ok(Response::new(Box::pin(futures_util::StreamExt::map(
            statuses,
            |status| {
                Ok(HealthCheckResponse {
                    status: status as i32,
                })
            },
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_of_an_unknown_service_waits_for_it_and_sees_it_go() {
        let book = HealthBook::default();
        assert_eq!(book.status(""), Some(ServingStatus::Serving));
        assert_eq!(book.status("a.A"), None);
        let mut rx = book.watch("a.A");
        assert_eq!(*rx.borrow_and_update(), ServingStatus::ServiceUnknown);
        // Still unknown to Check while only watched.
        assert_eq!(book.status("a.A"), None);
        book.set("a.A", ServingStatus::Serving);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), ServingStatus::Serving);
        assert_eq!(book.status("a.A"), Some(ServingStatus::Serving));
        // The same status again is no news.
        book.set("a.A", ServingStatus::Serving);
        assert!(!rx.has_changed().unwrap());
        book.clear("a.A");
        assert_eq!(*rx.borrow_and_update(), ServingStatus::ServiceUnknown);
        assert_eq!(book.status("a.A"), None);
    }

    #[test]
    fn made_up_names_are_forgotten_once_nobody_watches_them() {
        let book = HealthBook::default();
        for i in 0..100 {
            drop(book.watch(&format!("made.up.S{i}")));
        }
        // Each new watch sweeps those left behind.
        assert!(book.statuses().len() <= 2, "{}", book.statuses().len());
        book.set("real.R", ServingStatus::NotServing);
        drop(book.watch("another.S"));
        assert_eq!(book.status("real.R"), Some(ServingStatus::NotServing));
    }
}
