//! Plain-text HTTP/2 (h2c) connections to gRPC servers: backends,
//! reflection and external authorization. A server that speaks something
//! else there (a TLS server, an HTTP/1.1 one) answers the client preface
//! with bytes HTTP/2 reads as an oversized frame and reports as
//! FRAME_SIZE_ERROR, which names neither the server's protocol nor the
//! setting to fix. The first bytes each connection reads are looked at once,
//! and such a reply fails the connection with what the server spoke.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Connects as tonic's own plain-text connector does (TCP_NODELAY, the
/// connect timeout), and hands out streams that check the server's first
/// bytes.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
}

impl Connector {
    pub fn new(connect_timeout: Duration) -> Connector {
        Connector {
            tcp: super::tls::tcp(Some(connect_timeout)),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<FirstReplyChecked>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(uri);
        Box::pin(async move {
            let stream = connecting.await?.into_inner();
            Ok(TokioIo::new(FirstReplyChecked {
                stream,
                checked: false,
            }))
        })
    }
}

/// A TCP stream whose first bytes read must be able to begin HTTP/2.
pub struct FirstReplyChecked {
    stream: TcpStream,
    checked: bool,
}

impl AsyncRead for FirstReplyChecked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.checked {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        let first = &buf.filled()[before..];
        if first.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.checked = true;
        match not_http2(first) {
            Some(spoke) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, spoke))),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl FirstReplyChecked {
    /// A write that failed before anything was read: a server that closed
    /// on the client preface may have said why first (a TLS alert), and
    /// that is the error to report rather than the broken pipe.
    fn write_error(&mut self, failed: io::Error) -> io::Error {
        if self.checked {
            return failed;
        }
        // A read straight from the socket: tokio's `try_read` answers
        // from the readiness it has seen, which may not include these
        // bytes yet.
        let mut first = [0u8; 64];
        let socket = socket2::SockRef::from(&self.stream);
        match io::Read::read(&mut &*socket, &mut first) {
            Ok(n) => {
                self.checked = true;
                match not_http2(&first[..n]) {
                    Some(spoke) => io::Error::new(io::ErrorKind::InvalidData, spoke),
                    None => failed,
                }
            }
            Err(_) => failed,
        }
    }
}

impl AsyncWrite for FirstReplyChecked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write(cx, buf));
        Poll::Ready(written.map_err(|e| self.write_error(e)))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs));
        Poll::Ready(written.map_err(|e| self.write_error(e)))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// What a server spoke, when its first bytes cannot begin HTTP/2. An
/// HTTP/2 server opens with a SETTINGS frame, whose 24-bit length is far
/// below 65,536, so its first byte is 0; a TLS record opens with its
/// content type (21 an alert, 22 a handshake) and major version 3, and an
/// HTTP/1 reply with `HTTP/`.
fn not_http2(first: &[u8]) -> Option<String> {
    match first {
        [0, ..] | [] => None,
        [21 | 22] | [21 | 22, 3, ..] => Some(
            "the server answered in TLS: is it a TLS server where plain text was asked for? \
             Set the upstream's `tls = true` (an `https://` URL for external authorization)"
                .to_owned(),
        ),
        // A TLS front (Go's, nginx's) answers plain text with an HTTP/1
        // error that says so.
        _ if first.starts_with(b"HTTP/") && first.windows(5).any(|w| w == b"HTTPS") => Some(format!(
            "the server answered `{}` and names HTTPS: is it a TLS server where plain text was asked for? \
             Set the upstream's `tls = true` (an `https://` URL for external authorization)",
            first_line(first)
        )),
        _ if first.starts_with(b"HTTP/") => Some(format!(
            "the server answered in HTTP/1 (`{}`), not HTTP/2: a gRPC server speaks HTTP/2; \
             a JSON backend over HTTP/1.1 is an upstream with `protocol = \"http\"` \
             (for external authorization, an `http` service)",
            first_line(first)
        )),
        _ => Some(format!(
            "the server did not answer in HTTP/2 (its reply begins `{}`): a gRPC server speaks HTTP/2",
            first_line(first)
        )),
    }
}

/// The reply's first line, at most 64 bytes, printable ASCII only.
fn first_line(reply: &[u8]) -> String {
    let line = reply
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(reply);
    line[..line.len().min(64)]
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::not_http2;

    #[test]
    fn an_http2_server_preface_passes() {
        // SETTINGS, 18 bytes, no flags, stream 0.
        assert_eq!(not_http2(&[0, 0, 18, 4, 0, 0, 0, 0, 0]), None);
        assert_eq!(not_http2(&[0]), None);
    }

    #[test]
    fn a_tls_alert_or_handshake_is_said_to_be_tls() {
        for first in [&[21, 3, 3, 0, 2, 2, 50][..], &[22, 3, 1, 0, 90], &[21]] {
            let said = not_http2(first).expect("TLS");
            assert!(
                said.contains("answered in TLS") && said.contains("tls = true"),
                "{said}"
            );
        }
    }

    #[test]
    fn an_http1_reply_is_quoted() {
        let said = not_http2(b"HTTP/1.0 400 Bad request version ('HTTP/2.0')\r\nServer: x\r\n")
            .expect("HTTP/1");
        assert!(
            said.contains("`HTTP/1.0 400 Bad request version ('HTTP/2.0')`"),
            "{said}"
        );
        assert!(said.contains("protocol = \"http\""), "{said}");
    }

    #[test]
    fn a_tls_fronts_plain_text_refusal_is_said_to_be_tls() {
        let said = not_http2(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )
        .expect("a TLS front");
        assert!(
            said.contains("names HTTPS") && said.contains("tls = true"),
            "{said}"
        );
    }

    #[test]
    fn any_other_reply_is_quoted_as_not_http2() {
        let said = not_http2(b"<!DOCTYPE HTML>\n<html>").expect("not HTTP/2");
        assert!(
            said.contains("did not answer in HTTP/2 (its reply begins `<!DOCTYPE HTML>`)"),
            "{said}"
        );
    }
}
