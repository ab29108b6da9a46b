//! The request id on the gateway's own log lines about a request.
//!
//! A tracing span per request would carry it, but the fmt subscriber
//! allocates a span and formats its fields for every request, logged or
//! not, and enters and leaves it on every poll: several percent of a JSON
//! call's CPU (BENCHMARKS.md). Most requests write no line at all, so the
//! id sits in a task-local (a pointer swap per poll) and is read only when
//! a line is written.

use std::fmt;
use std::future::Future;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    static REQUEST_ID: http::HeaderValue;
}

/// Runs `request` with `id` as the request id of every line it logs. A
/// plain function, not an `async fn`: that would hold `request` twice (as
/// its argument and as the future it awaits), doubling the request's
/// future, which is moved whole several times per request.
pub fn scope<F: Future>(
    id: http::HeaderValue,
    request: F,
) -> tokio::task::futures::TaskLocalFuture<http::HeaderValue, F> {
    REQUEST_ID.scope(id, request)
}

/// The id of the request being served, if any: for a reply stream, which
/// is polled after its request's scope has ended.
pub fn current() -> Option<http::HeaderValue> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Runs `log` with `id` as the request id of the lines it writes.
pub fn with<R>(id: http::HeaderValue, log: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, log)
}

/// The default line format, with `request_id=…` appended to lines written
/// while a request is being served.
pub struct WithRequestId {
    plain: Format,
    colored: Format,
}

impl Default for WithRequestId {
    fn default() -> Self {
        WithRequestId {
            plain: Format::default(),
            colored: Format::default().with_ansi(true),
        }
    }
}

impl<S, N> FormatEvent<S, N> for WithRequestId
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Ok(id) = REQUEST_ID.try_with(Clone::clone) else {
            return self.plain.format_event(ctx, writer, event);
        };
        // The line is formatted aside so the id can go before its newline;
        // that writer knows nothing of the terminal, so colors are chosen here.
        let format = if writer.has_ansi_escapes() {
            &self.colored
        } else {
            &self.plain
        };
        let mut line = String::new();
        format.format_event(ctx, Writer::new(&mut line), event)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        // Ids are visible ASCII (the edge replaces any other), so this is text.
        let id = id.to_str().unwrap_or_default();
        writeln!(writer, "{line} request_id={id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    #[tokio::test]
    async fn lines_inside_a_request_carry_its_id_and_others_do_not() {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(lines.clone())
            .event_format(WithRequestId::default())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);

        tracing::info!(target: "portico::access", "outside");
        scope(http::HeaderValue::from_static("abc123"), async {
            tracing::warn!(target: "portico::access", status = 502, "backend failed");
            tokio::task::yield_now().await;
            tracing::info!("after a yield");
        })
        .await;

        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].ends_with("portico::access: outside"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with("portico::access: backend failed status=502 request_id=abc123"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains(" WARN "), "{}", lines[1]);
        assert!(
            lines[2].ends_with("after a yield request_id=abc123"),
            "{}",
            lines[2]
        );
    }
}
