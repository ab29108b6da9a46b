//! gRPC health checking (`grpc.health.v1.Health`) as the protocol
//! describes it: `Check` of a service the gateway does not report is
//! `NOT_FOUND`; `Watch` of one streams `SERVICE_UNKNOWN` and stays open,
//! sending its status once it becomes known (a route added by a reload),
//! and `SERVICE_UNKNOWN` again if it stops being reported.

use futures_util::{Stream, StreamExt};
use std::collections::{BTreeSet, HashMap};
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
    book: Mutex<Book>,
    /// True once the process drains: everything is `NOT_SERVING` then, and
    /// watches end, so none holds the drain up.
    shutdown: watch::Receiver<bool>,
}

#[derive(Debug)]
struct Book {
    /// Reported services, and unknown ones somebody watches.
    statuses: HashMap<String, watch::Sender<ServingStatus>>,
    /// The services the live generation routes: only these are reported.
    routed: BTreeSet<String>,
    /// The book's size after its last sweep of forgotten names.
    swept_at: usize,
}

impl Book {
    /// `status` for a routed `service`: over any it had (`replace`), or
    /// only where it had none yet.
    fn set(&mut self, service: &str, status: ServingStatus, replace: bool) {
        if !self.routed.contains(service) {
            return;
        }
        match self.statuses.get(service) {
            Some(tx) => {
                tx.send_if_modified(|now| {
                    let take = replace || *now == ServingStatus::ServiceUnknown;
                    take && std::mem::replace(now, status) != status
                });
            }
            None => {
                self.statuses
                    .insert(service.to_owned(), watch::channel(status).0);
            }
        }
    }
}

impl HealthBook {
    pub fn new(shutdown: watch::Receiver<bool>) -> HealthBook {
        // The server as a whole (`""`) serves while the process does.
        let (serving, _) = watch::channel(ServingStatus::Serving);
        HealthBook {
            book: Mutex::new(Book {
                statuses: HashMap::from([(String::new(), serving)]),
                routed: BTreeSet::new(),
                swept_at: 0,
            }),
            shutdown,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The services a new generation routes, once it is sure to go live:
    /// those no longer routed stop being reported (their watchers are told
    /// `SERVICE_UNKNOWN`); the others keep their status until reported again.
    pub fn route(&self, services: BTreeSet<String>) {
        let mut book = self.book();
        let gone: Vec<String> = book.routed.difference(&services).cloned().collect();
        for name in gone {
            if let Some(tx) = book.statuses.get(&name) {
                if tx.receiver_count() == 0 {
                    book.statuses.remove(&name);
                } else {
                    tx.send_replace(ServingStatus::ServiceUnknown);
                }
            }
        }
        book.routed = services;
    }

    /// Reports a routed `service` as `status`; watchers see it when it
    /// changes. A service the live generation does not route is left
    /// alone (a report of an older generation, still running).
    pub fn set(&self, service: &str, status: ServingStatus) {
        self.book().set(service, status, true);
    }

    /// As [`HealthBook::set`], for a service with no status yet only: a
    /// generation's first word before its probe has answered.
    pub fn set_if_unreported(&self, service: &str, status: ServingStatus) {
        self.book().set(service, status, false);
    }

    fn status(&self, service: &str) -> Option<ServingStatus> {
        let status = *self.book().statuses.get(service)?.borrow();
        if status == ServingStatus::ServiceUnknown {
            return None;
        }
        Some(if *self.shutdown.borrow() {
            ServingStatus::NotServing
        } else {
            status
        })
    }

    fn watch(&self, service: &str) -> watch::Receiver<ServingStatus> {
        let mut book = self.book();
        if let Some(tx) = book.statuses.get(service) {
            return tx.subscribe();
        }
        // Unknown services nobody watches any more are forgotten, so
        // watching made-up names cannot grow the book; swept when it has
        // doubled, so many watches cost little each.
        if book.statuses.len() >= 2 * book.swept_at.max(32) {
            book.statuses.retain(|_, tx| {
                *tx.borrow() != ServingStatus::ServiceUnknown || tx.receiver_count() > 0
            });
            book.swept_at = book.statuses.len();
        }
        let (tx, rx) = watch::channel(ServingStatus::ServiceUnknown);
        book.statuses.insert(service.to_owned(), tx);
        rx
    }

    /// The `grpc.health.v1.Health` service over this book.
    pub fn server(self: &Arc<Self>) -> HealthServer<HealthService> {
        HealthServer::new(HealthService(self.clone()))
    }
}

pub struct HealthService(Arc<HealthBook>);

type Statuses = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn reply(status: ServingStatus) -> Result<HealthCheckResponse, Status> {
    Ok(HealthCheckResponse {
        status: status as i32,
    })
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        match self.0.status(service) {
            Some(status) => reply(status).map(Response::new),
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
        let mut shutdown = self.0.shutdown.clone();
        let draining = async move {
            let _ = shutdown.wait_for(|down| *down).await;
        };
        // At the drain, a last NOT_SERVING and the end of the call.
        let watch = statuses
            .map(reply)
            .take_until(draining)
            .chain(futures_util::stream::once(async {
                reply(ServingStatus::NotServing)
            }));
        Ok(Response::new(Box::pin(watch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> (HealthBook, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(false);
        let book = HealthBook::new(rx);
        book.route(BTreeSet::from(["a.A".to_owned(), "b.B".to_owned()]));
        (book, tx)
    }

    #[test]
    fn a_watch_of_an_unknown_service_waits_for_it_and_sees_it_go() {
        let (book, _) = book();
        assert_eq!(book.status(""), Some(ServingStatus::Serving));
        assert_eq!(book.status("a.A"), None, "routed, not reported yet");
        let mut rx = book.watch("a.A");
        assert_eq!(*rx.borrow_and_update(), ServingStatus::ServiceUnknown);
        book.set("a.A", ServingStatus::Serving);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), ServingStatus::Serving);
        assert_eq!(book.status("a.A"), Some(ServingStatus::Serving));
        // The same status again is no news.
        book.set("a.A", ServingStatus::Serving);
        assert!(!rx.has_changed().unwrap());
        // A first word before the probe changes nothing already reported.
        book.set_if_unreported("a.A", ServingStatus::NotServing);
        assert!(!rx.has_changed().unwrap());
        // A reload stops routing it.
        book.route(BTreeSet::from(["b.B".to_owned()]));
        assert_eq!(*rx.borrow_and_update(), ServingStatus::ServiceUnknown);
        assert_eq!(book.status("a.A"), None);
        // A report from the older generation, still running, is ignored.
        book.set("a.A", ServingStatus::Serving);
        assert_eq!(book.status("a.A"), None);
    }

    #[test]
    fn made_up_names_are_forgotten_once_nobody_watches_them() {
        let (book, _) = book();
        book.set("a.A", ServingStatus::NotServing);
        for i in 0..1000 {
            drop(book.watch(&format!("made.up.S{i}")));
        }
        assert!(
            book.book().statuses.len() <= 66,
            "{}",
            book.book().statuses.len()
        );
        assert_eq!(book.status("a.A"), Some(ServingStatus::NotServing));
    }

    #[test]
    fn a_draining_gateway_serves_nothing() {
        let (book, shutdown) = book();
        book.set("a.A", ServingStatus::Serving);
        shutdown.send_replace(true);
        assert_eq!(book.status("a.A"), Some(ServingStatus::NotServing));
        assert_eq!(book.status(""), Some(ServingStatus::NotServing));
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_ends_with_not_serving_when_the_gateway_drains() {
        let (tx, rx) = watch::channel(false);
        let book = Arc::new(HealthBook::new(rx));
        book.route(BTreeSet::from(["a.A".to_owned()]));
        book.set("a.A", ServingStatus::Serving);
        let mut statuses = HealthService(book)
            .watch(Request::new(HealthCheckRequest {
                service: "a.A".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        let status = |r: Option<Result<HealthCheckResponse, Status>>| r.unwrap().unwrap().status;
        assert_eq!(status(statuses.next().await), ServingStatus::Serving as i32);
        tx.send_replace(true);
        assert_eq!(
            status(statuses.next().await),
            ServingStatus::NotServing as i32
        );
        assert!(statuses.next().await.is_none(), "the call ends");
    }
}
