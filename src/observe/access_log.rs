//! The access log's sink: one line per call (and per WebSocket session),
//! made from the fields a [`CallRecord`](super::call_record::CallRecord)
//! gathered, as JSON or as text, appended to a file or standard output.
//!
//! Lines are appended to an in-memory buffer that a writer thread empties
//! every 100 ms (sooner when 256 KiB are waiting): a request pays for
//! formatting its line and a short lock, never for a write.
//! A slow disk or a blocked stdout never holds up a request: past 8 MiB
//! waiting, a line is dropped and counted (`portico_access_log_lines_total`).

pub mod config;

pub use config::{AccessLogConfig, Format};

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Lines dropped because the writer fell behind or its write failed, over
/// the process's life.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Lines written out (or waiting to be), over the process's life.
pub static WRITTEN: AtomicU64 = AtomicU64::new(0);

/// How often a failing write is logged, at most.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How often the writer empties the buffer, at the latest.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How much waiting wakes the writer before its time: each wake-up takes
/// the core from the runtime thread, so a few per second, not hundreds.
const FLUSH_AT: usize = 256 * 1024;
/// How much may wait before new lines are dropped.
const MAX_WAITING: usize = 8 * 1024 * 1024;

/// One field of a line.
#[derive(Debug, Clone, Copy)]
pub enum Field<'a> {
    Null,
    Str(&'a str),
    UInt(u64),
    /// Milliseconds and the like; finite.
    Float(f64),
    /// A duration given in microseconds, written in milliseconds
    /// (`12.345`, `0.5`, `3`).
    Millis(u64),
    /// Written as RFC 3339 UTC with milliseconds.
    Time(std::time::SystemTime),
    Ip(std::net::IpAddr),
}

impl<'a> From<Option<&'a str>> for Field<'a> {
    fn from(v: Option<&'a str>) -> Field<'a> {
        v.map_or(Field::Null, Field::Str)
    }
}

/// What the writer thread and the requests share.
struct Shared {
    waiting: Mutex<Vec<u8>>,
    wake: Condvar,
    closed: AtomicBool,
    /// Set by a reload that built no new generation: the file is opened
    /// again before the next write, so rotation by renaming still works.
    reopen: AtomicBool,
    /// Set by [`AccessLog::close`]: the writer then keeps its destination
    /// in `late` when it ends (a log dropped by a reload closes its file).
    keep_for_late: AtomicBool,
    /// The destination, once the writer has ended: a call that ends after
    /// the log closed (one cut at the drain timeout whose task lets go of
    /// it as the process exits) writes its line here itself, so no call
    /// goes unlogged.
    late: Mutex<Option<Box<dyn Write + Send>>>,
}

/// Where lines go: one per generation (a reload opens the file again, so
/// a log rotated by renaming it continues in a new file).
pub struct AccessLog {
    format: Format,
    sample: f64,
    shared: Arc<Shared>,
}

/// Every writer thread not yet finished, for [`AccessLog::close`].
static WRITERS: Mutex<Vec<(Arc<Shared>, std::thread::JoinHandle<()>)>> = Mutex::new(Vec::new());

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("format", &self.format)
            .field("sample", &self.sample)
            .finish()
    }
}

impl AccessLog {
    /// Opens the log's destination and starts its writer thread.
    pub fn start(config: &AccessLogConfig) -> Result<Arc<AccessLog>, String> {
        let path = config.path.clone();
        let mut out: Box<dyn Write + Send> = match &path {
            Some(path) => Box::new(open(path)?),
            None => Box::new(std::io::stdout()),
        };
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Vec::with_capacity(FLUSH_AT)),
            wake: Condvar::new(),
            closed: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            keep_for_late: AtomicBool::new(false),
            late: Mutex::new(None),
        });
        let theirs = shared.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut spare = Vec::with_capacity(FLUSH_AT);
                // Lines lost to failed writes since the last warning, and
                // when that was: a full disk is one line a minute, not one
                // per write.
                let mut lost = 0u64;
                let mut warned: Option<std::time::Instant> = None;
                loop {
                    {
                        let mut waiting = lock(&theirs.waiting);
                        // Waits even when lines arrived during the last
                        // write: the writer shares the gateway's cores, and
                        // a write per wake-up beats a wake-up per few lines.
                        if waiting.len() < FLUSH_AT && !theirs.closed.load(Ordering::Acquire) {
                            waiting = theirs
                                .wake
                                .wait_timeout(waiting, FLUSH_EVERY)
                                .map(|(g, _)| g)
                                .unwrap_or_else(|e| e.into_inner().0);
                        }
                        if waiting.is_empty() {
                            if theirs.closed.load(Ordering::Acquire) {
                                // Under the buffer's lock: a line queued
                                // from now on finds the destination here.
                                if theirs.keep_for_late.load(Ordering::Acquire) {
                                    *lock(&theirs.late) = Some(out);
                                }
                                return;
                            }
                            continue;
                        }
                        std::mem::swap(&mut *waiting, &mut spare);
                    }
                    if theirs.reopen.swap(false, Ordering::AcqRel) {
                        if let Some(path) = &path {
                            match open(path) {
                                Ok(file) => out = Box::new(file),
                                Err(e) => {
                                    tracing::warn!(error = %e, "access log not reopened; writing to the file already open")
                                }
                            }
                        }
                    }
                    // Whole lines per write: two generations appending to
                    // one file during a reload never split each other's.
                    if let Err(e) = out.write_all(&spare).and_then(|()| out.flush()) {
                        // Counted as dropped, not written: the metric is
                        // what tells a full disk from a quiet gateway.
                        let lines = spare.iter().filter(|&&b| b == b'\n').count() as u64;
                        WRITTEN.fetch_sub(lines, Ordering::Relaxed);
                        DROPPED.fetch_add(lines, Ordering::Relaxed);
                        lost += lines;
                        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                            tracing::warn!(error = %e, lines_lost = lost, "access log write failed; lines are dropped until a write succeeds (logged at most once a minute)");
                            warned = Some(std::time::Instant::now());
                            lost = 0;
                        }
                    }
                    spare.clear();
                }
            })
            .map_err(|e| format!("cannot start the access log writer: {e}"))?;
        {
            let mut writers = lock(&WRITERS);
            writers.retain(|(_, w)| !w.is_finished());
            writers.push((shared.clone(), writer));
        }
        Ok(Arc::new(AccessLog {
            format: config.format,
            sample: config.sample,
            shared,
        }))
    }

    /// Opens the file again before the next line is written: what a
    /// reload that changed nothing does, so a log renamed away continues in
    /// a new file.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// Writes out what is waiting and ends the writer: the last step of a
    /// graceful shutdown, once the calls in flight are done. Blocks.
    pub fn close(&self) {
        self.shared.keep_for_late.store(true, Ordering::Release);
        self.shared.stop();
        let writer = {
            let mut writers = lock(&WRITERS);
            let i = writers
                .iter()
                .position(|(s, _)| Arc::ptr_eq(s, &self.shared));
            i.map(|i| writers.swap_remove(i).1)
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
    }

    /// Whether a call's line is written: every failed call, and the
    /// sampled share of the others.
    pub fn wants(&self, failed: bool) -> bool {
        failed || self.sample >= 1.0 || fastrand::f64() < self.sample
    }

    /// Formats and queues one line.
    pub fn write(&self, fields: &[(&str, Field<'_>)]) {
        thread_local! {
            // One line's text, reused: a line costs no allocation.
            static LINE: std::cell::RefCell<String> = std::cell::RefCell::new(String::with_capacity(1024));
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            match self.format {
                Format::Json => json_line(&mut line, fields),
                Format::Text => text_line(&mut line, fields),
            }
            self.queue(&line);
        });
    }

    fn queue(&self, line: &str) {
        let mut waiting = lock(&self.shared.waiting);
        if self.shared.closed.load(Ordering::Acquire) {
            if let Some(out) = lock(&self.shared.late).as_mut() {
                let written = out.write_all(line.as_bytes()).and_then(|()| out.flush());
                match written {
                    Ok(()) => WRITTEN.fetch_add(1, Ordering::Relaxed),
                    Err(_) => DROPPED.fetch_add(1, Ordering::Relaxed),
                };
                return;
            }
            // The writer has yet to end: it writes what is waiting first.
        }
        if waiting.len() + line.len() > MAX_WAITING {
            drop(waiting);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = waiting.len();
        waiting.extend_from_slice(line.as_bytes());
        let crossed = before < FLUSH_AT && waiting.len() >= FLUSH_AT;
        drop(waiting);
        WRITTEN.fetch_add(1, Ordering::Relaxed);
        if crossed {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for AccessLog {
    /// The generation that owned it is gone: its writer writes what is
    /// waiting and ends, on its own thread (never a request's).
    fn drop(&mut self) {
        self.shared.stop();
    }
}

impl Shared {
    /// Tells the writer to write what is waiting and end. The flag is set
    /// under the buffer's lock, so a writer between its check of the flag
    /// and its wait cannot miss the wake-up and sleep a whole period.
    fn stop(&self) {
        let waiting = lock(&self.waiting);
        self.closed.store(true, Ordering::Release);
        drop(waiting);
        self.wake.notify_one();
    }
}

fn open(path: &std::path::Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One JSON object per line. A key is a field's name, or (what the call
/// records pass, saving a copy per field) the name already framed as
/// `"name":`.
fn json_line(out: &mut String, fields: &[(&str, Field<'_>)]) {
    use std::fmt::Write as _;
    out.push('{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if key.starts_with('"') {
            out.push_str(key);
        } else {
            out.push('"');
            out.push_str(key);
            out.push_str("\":");
        }
        match value {
            Field::Null => out.push_str("null"),
            Field::Str(s) => push_json_string(out, s),
            Field::UInt(n) => out.push_str(itoa::Buffer::new().format(*n)),
            Field::Float(f) => {
                let _ = write!(out, "{f}");
            }
            Field::Millis(micros) => push_millis(out, *micros),
            Field::Time(t) => {
                out.push('"');
                push_rfc3339_millis(out, *t);
                out.push('"');
            }
            Field::Ip(std::net::IpAddr::V4(ip)) => {
                out.push('"');
                for (i, octet) in ip.octets().iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(itoa::Buffer::new().format(*octet));
                }
                out.push('"');
            }
            Field::Ip(ip) => {
                let _ = write!(out, "\"{ip}\"");
            }
        }
    }
    out.push_str("}\n");
}

/// Whether any byte of `bytes` must be escaped in a JSON string: a
/// control character, `"`, `\\` or DEL. Eight bytes at a time: every
/// line scans a few hundred bytes, nearly always for nothing.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero: the classic "has zero byte" test.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        // Below 0x20 (ASCII bytes only: a UTF-8 byte has its high bit set
        // and is never a control character, so it is masked out).
        let low = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        if low
            | zero(x ^ (ONES * u64::from(b'"')))
            | zero(x ^ (ONES * u64::from(b'\\')))
            | zero(x ^ (ONES * 0x7f))
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f)
}

/// A field's name without the JSON framing [`json_line`] accepts.
fn plain(key: &str) -> &str {
    key.strip_prefix('"')
        .and_then(|k| k.strip_suffix("\":"))
        .unwrap_or(key)
}

/// Microseconds as milliseconds, the shortest exact decimal (what `{}`
/// writes for the same `f64`), by integer arithmetic.
fn push_millis(out: &mut String, micros: u64) {
    out.push_str(itoa::Buffer::new().format(micros / 1000));
    let frac = micros % 1000;
    if frac != 0 {
        let digits = [
            b'.',
            b'0' + (frac / 100) as u8,
            b'0' + (frac / 10 % 10) as u8,
            b'0' + (frac % 10) as u8,
        ];
        let keep = if frac.is_multiple_of(100) {
            2
        } else if frac.is_multiple_of(10) {
            3
        } else {
            4
        };
        out.push_str(std::str::from_utf8(&digits[..keep]).unwrap_or_default());
    }
}

/// RFC 3339 UTC with milliseconds. The date and time down to the second
/// are formatted once per second and thread; the milliseconds per line.
fn push_rfc3339_millis(out: &mut String, t: std::time::SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let whole = std::time::UNIX_EPOCH + Duration::from_secs(secs);
            // `2026-12-01T10:00:00Z`: keep all but the `Z`.
            let mut text = humantime::format_rfc3339_seconds(whole).to_string();
            text.pop();
            *cached = (secs, text);
        }
        out.push_str(&cached.1);
    });
    let ms = since.subsec_millis();
    let digits = [
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ];
    out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
}

/// A JSON string: quoted, with `"`, `\\` and control characters escaped
/// (RFC 8259); everything else as it is, UTF-8. Most values need no
/// escape and are copied whole.
fn push_json_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f;
    out.push('"');
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        if !needs(b) {
            continue;
        }
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => "",
        };
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// The development format: the essentials first, then every other known
/// field as `key=value`, strings quoted and escaped (no client can forge a
/// line or send a terminal escape).
fn text_line(out: &mut String, fields: &[(&str, Field<'_>)]) {
    use std::fmt::Write as _;
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| plain(key) == k)
            .map(|(_, v)| *v)
    };
    let s = |k: &str| match get(k) {
        Some(Field::Str(s)) => s.to_owned(),
        Some(Field::Time(t)) => humantime::format_rfc3339_millis(t).to_string(),
        _ => "-".to_owned(),
    };
    let num = |k: &str| match get(k) {
        Some(Field::UInt(n)) => n.to_string(),
        Some(Field::Float(f)) => f.to_string(),
        Some(Field::Millis(m)) => {
            let mut s = String::new();
            push_millis(&mut s, m);
            s
        }
        _ => "-".to_owned(),
    };
    let _ = write!(
        out,
        "{} {} {} {:?} -> {} {} {}ms",
        s("timestamp"),
        s("protocol"),
        s("http_method"),
        s("path"),
        num("http_status"),
        s("grpc_status"),
        num("duration_ms"),
    );
    for (k, v) in fields {
        let k = plain(k);
        if matches!(
            k,
            "timestamp"
                | "protocol"
                | "http_method"
                | "path"
                | "http_status"
                | "grpc_status"
                | "duration_ms"
                | "grpc_code"
        ) {
            continue;
        }
        match v {
            Field::Null => {}
            Field::Str(t) => {
                let _ = write!(out, " {k}={t:?}");
            }
            Field::UInt(n) => {
                let _ = write!(out, " {k}={n}");
            }
            Field::Float(f) => {
                let _ = write!(out, " {k}={f}");
            }
            Field::Millis(m) => {
                let _ = write!(out, " {k}=");
                push_millis(out, *m);
            }
            Field::Time(t) => {
                let _ = write!(out, " {k}=");
                push_rfc3339_millis(out, *t);
            }
            Field::Ip(ip) => {
                let _ = write!(out, " {k}={ip}");
            }
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_scan_finds_every_byte_that_needs_one_wherever_it_is() {
        let plain = "GET /v1/shelves/1 é ☃ 0123456789abcdef~";
        assert!(!needs_escape(plain.as_bytes()));
        for bad in [0u8, 0x1f, b'"', b'\\', 0x7f, b'\n'] {
            for at in 0..plain.len() + 1 {
                if !plain.is_char_boundary(at) {
                    continue;
                }
                let mut s = plain.as_bytes().to_vec();
                s.insert(at, bad);
                assert!(needs_escape(&s), "{bad:#x} at {at}");
            }
        }
        // Every single byte, alone and in a run of eight.
        for b in 0..=255u8 {
            let want = b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f;
            assert_eq!(needs_escape(&[b]), want, "{b:#x}");
            assert_eq!(needs_escape(&[b; 8]), want, "{b:#x} x8");
            let mut padded = [b'a'; 16];
            padded[11] = b;
            assert_eq!(needs_escape(&padded), want, "{b:#x} in 16");
        }
    }

    #[test]
    fn milliseconds_and_timestamps_are_written_as_core_fmt_would() {
        for (micros, want) in [
            (0, "0"),
            (1, "0.001"),
            (500, "0.5"),
            (12_340, "12.34"),
            (12_345, "12.345"),
            (3_000_000, "3000"),
            (1_000_010, "1000.01"),
        ] {
            let mut out = String::new();
            push_millis(&mut out, micros);
            assert_eq!(out, want);
            let float = (micros as f64) / 1000.0;
            assert_eq!(out, float.to_string(), "{micros}");
        }
        let t = std::time::UNIX_EPOCH + Duration::from_millis(1_764_590_400_007);
        for _ in 0..2 {
            let mut out = String::new();
            push_rfc3339_millis(&mut out, t);
            assert_eq!(out, humantime::format_rfc3339_millis(t).to_string());
        }
        let later = t + Duration::from_millis(1_993);
        let mut out = String::new();
        push_rfc3339_millis(&mut out, later);
        assert_eq!(out, humantime::format_rfc3339_millis(later).to_string());
    }

    /// A call cut at the drain timeout may let go of its record only as
    /// the process exits, after the log has closed: its line still reaches
    /// the file, written by the call itself.
    #[test]
    fn a_line_that_comes_after_the_log_closed_is_still_written() {
        let dir = crate::scratch::ScratchDir::new("late-line");
        let path = dir.join("access.log");
        let log = AccessLog::start(&AccessLogConfig {
            format: Format::Json,
            path: Some(path.clone()),
            sample: 1.0,
        })
        .unwrap();
        log.write(&[("call", Field::Str("before"))]);
        log.close();
        log.write(&[("call", Field::Str("after"))]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"call\":\"before\"}\n{\"call\":\"after\"}\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_json_line_is_one_object_with_escaped_strings() {
        let mut line = String::new();
        json_line(
            &mut line,
            &[
                ("path", Field::Str("/v1/x\r\n\"q\"\\ \u{1b}[31m \u{7f} é")),
                ("n", Field::UInt(3)),
                ("ms", Field::Float(1.5)),
                ("none", Field::Null),
            ],
        );
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"path": "/v1/x\r\n\"q\"\\ \u{1b}[31m \u{7f} é", "n": 3, "ms": 1.5, "none": null})
        );
    }

    #[test]
    fn the_text_format_escapes_what_a_client_wrote() {
        let mut line = String::new();
        text_line(
            &mut line,
            &[
                ("timestamp", Field::Str("2026-12-01T00:00:00.000Z")),
                ("path", Field::Str("/v1/x\r\nFORGED \u{1b}[31m")),
                ("principal", Field::Str("eve\nFORGED")),
            ],
        );
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(!line.contains('\u{1b}'), "{line}");
        assert!(line.contains(r#""/v1/x\r\nFORGED \u{1b}[31m""#), "{line}");
    }
}
