//! The writer of one WebSocket connection: the only owner of the socket's
//! sending half. Frames from every call arrive through one bounded queue,
//! so a slow client slows the calls; pings keep the connection alive, and a
//! close ends it.

use super::super::protocol::Out;
use crate::error::WsClose;
use bytes::Bytes;
use futures_util::SinkExt;
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Replies queued for the writer, across all calls of a connection.
pub(super) const OUT_QUEUE: usize = 16;

/// Times a writer that caught up holding two or more frames yields before
/// the write: bounds how long a ready frame waits for more.
const FLOW_TURNS: usize = 4;

/// What the session and its calls hand the writer.
pub(super) enum Outgoing {
    Frame(Out),
    Close(WsClose, String),
}

pub(super) async fn write_loop(
    mut sink: futures_util::stream::SplitSink<
        WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
        Message,
    >,
    mut out: mpsc::Receiver<Outgoing>,
    mut ping_interval: tokio::sync::watch::Receiver<Duration>,
    record: std::sync::Arc<crate::observe::call_record::CallRecord>,
) {
    let every = *ping_interval.borrow_and_update();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        let next = tokio::select! {
            o = out.recv() => o,
            // A reload's websocket.ping_interval: the next ping one new
            // period from now.
            Ok(()) = ping_interval.changed() => {
                let every = *ping_interval.borrow_and_update();
                ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                continue;
            }
            _ = ping.tick() => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    return;
                }
                continue;
            }
        };
        // Feed everything already queued, then flush once: a fast stream
        // costs one write per batch rather than one per message. When the
        // writer catches up holding two or more frames (a stream in flow,
        // a reply and its status), it yields up to FLOW_TURNS times first:
        // a yielded task resumes after the other ready tasks have run (and,
        // on the current-thread runtime, after the I/O driver is polled),
        // so the calls can add what the backend has already sent, and one
        // write syscall carries what would have taken several. A lone
        // frame (a chat's answer) is written at once.
        let mut next = next;
        let mut frames = 0usize;
        let mut turns = 0usize;
        let result = loop {
            let fed = match next {
                Some(Outgoing::Frame(Out::Text(t))) => sink.feed(Message::text(t)).await,
                Some(Outgoing::Frame(Out::Binary(b))) => sink.feed(Message::Binary(b)).await,
                Some(Outgoing::Close(close, reason)) => {
                    record.closed(close.code());
                    let frame = CloseFrame {
                        code: CloseCode::from(close.code()),
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.close().await;
                    return;
                }
                None => {
                    let _ = sink.close().await;
                    return;
                }
            };
            if fed.is_err() {
                break fed;
            }
            frames += 1;
            let mut ready = out.try_recv();
            if frames > 1
                && turns < FLOW_TURNS
                && matches!(ready, Err(mpsc::error::TryRecvError::Empty))
            {
                turns += 1;
                tokio::task::yield_now().await;
                ready = out.try_recv();
            }
            match ready {
                Ok(more) => next = Some(more),
                Err(_) => break sink.flush().await,
            }
        };
        if result.is_err() {
            return;
        }
    }
}
