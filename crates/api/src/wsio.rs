//! The WebSocket transport of both feeds (RFC 6455, server side, over an HTTP/1.1 upgrade):
//! the handshake, a frame reader, and a writer that sends a whole batch of messages in one
//! vectored write.
//!
//! Why not a general WebSocket library: the fan-out writes the same rendered bytes to every
//! subscriber. Here a message's payload is written straight from its shared buffer (only the
//! few header bytes are made per connection), a batch of messages is one `writev`, and reading
//! and writing are separate halves that never wait on each other. No extension is negotiated
//! (no compression), so what is written is exactly the rendered JSON.
//!
//! The reader is strict: client frames must be masked, reserved bits clear, control frames
//! short and unfragmented, a message (all its fragments) at most the configured size, text
//! valid UTF-8. Anything else is a [`ReadError`], and the connection ends with a close.

use axum::extract::ws::Message;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use std::io::IoSlice;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};

type Io = TokioIo<hyper::upgrade::Upgraded>;

/// The GUID of RFC 6455 section 1.3.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bytes read from the socket at a time (more when a frame needs it).
const READ_CHUNK: usize = 8 * 1024;

/// A WebSocket upgrade request, checked.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: hyper::upgrade::OnUpgrade,
}

/// Why a request is not a WebSocket upgrade.
#[derive(Debug)]
pub struct NotUpgrade {
    status: StatusCode,
    text: &'static str,
}

impl NotUpgrade {
    pub fn status(&self) -> StatusCode {
        self.status
    }
    pub fn body_text(&self) -> String {
        self.text.to_owned()
    }
}

impl axum::response::IntoResponse for NotUpgrade {
    fn into_response(self) -> Response {
        crate::error::ApiError::new(self.status, "WEBSOCKET_EXPECTED", self.text).into_response()
    }
}

fn refuse(status: StatusCode, text: &'static str) -> NotUpgrade {
    NotUpgrade { status, text }
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = NotUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Upgrade, NotUpgrade> {
        if parts.version != Version::HTTP_11 {
            return Err(refuse(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "WebSocket connections are upgraded from HTTP/1.1",
            ));
        }
        if parts.method != Method::GET {
            return Err(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade is a GET request",
            ));
        }
        if !lists(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !lists(&parts.headers, header::UPGRADE, "websocket") {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| v.as_bytes())
            != Some(b"13")
        {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let key = match parts.headers.get(header::SEC_WEBSOCKET_KEY) {
            Some(k) if !k.is_empty() && k.len() <= 64 => k.clone(),
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "`Sec-WebSocket-Key` header missing",
                ))
            }
        };
        let on_upgrade = parts
            .extensions
            .remove::<hyper::upgrade::OnUpgrade>()
            .ok_or_else(|| {
                refuse(
                    StatusCode::UPGRADE_REQUIRED,
                    "WebSocket request couldn't be upgraded",
                )
            })?;
        Ok(Upgrade { key, on_upgrade })
    }
}

impl Upgrade {
    /// Answers `101 Switching Protocols` and, once the connection is handed over, runs `f` on
    /// it (on the current runtime; `f` may move the work elsewhere).
    pub fn on_upgrade<F, Fut>(self, f: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let accept = accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                    f(Socket {
                        reader: Reader::new(r),
                        writer: Writer::new(w),
                    })
                    .await
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            }
        });
        let mut res = Response::new(axum::body::Body::empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
        );
        res
    }
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    let mut h = Sha1::new();
    h.update(key);
    h.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// An upgraded connection: the halves read and write independently.
pub struct Socket {
    pub reader: Reader,
    pub writer: Writer,
}

/// A message from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    /// A binary message (its content is not kept).
    Binary,
    Ping(Bytes),
    Pong,
    Close,
}

/// Why a client's frames cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(&'static str),
    #[error("a message larger than {0} bytes")]
    TooLarge(usize),
    #[error("a text message that is not UTF-8")]
    NotUtf8,
}

/// Reads client frames. Cancel-safe: [`Reader::next`] keeps what it has read in `self`, so a
/// `select!` may drop its future at any await without losing bytes.
pub struct Reader {
    io: ReadHalf<Io>,
    buf: BytesMut,
    /// The fragments of a text message so far (`Some` between its first and last frame).
    partial: Option<Vec<u8>>,
    max: usize,
}

impl Reader {
    fn new(io: ReadHalf<Io>) -> Reader {
        Reader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            partial: None,
            max: crate::ws::FRAME_BYTES_MAX,
        }
    }

    /// The next message; `None` when the client closed the socket.
    pub async fn next(&mut self) -> Option<Result<Incoming, ReadError>> {
        loop {
            match parse(&mut self.buf, &mut self.partial, self.max) {
                Ok(Some(m)) => return Some(Ok(m)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
            self.buf.reserve(READ_CHUNK);
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
    }
}

/// Takes one whole frame from `buf` if there is one; fragments of a text message collect in
/// `partial` until the last one.
fn parse(
    buf: &mut BytesMut,
    partial: &mut Option<Vec<u8>>,
    max: usize,
) -> Result<Option<Incoming>, ReadError> {
    loop {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(ReadError::Protocol("reserved bits set (no extension was agreed)"));
        }
        let opcode = b0 & 0x0F;
        if b1 & 0x80 == 0 {
            return Err(ReadError::Protocol("a client frame must be masked"));
        }
        let (len, at) = match b1 & 0x7F {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (u64::from_be_bytes(n), 10)
            }
            n => (u64::from(n), 2),
        };
        let control = opcode & 0x08 != 0;
        if control && (!fin || len > 125) {
            return Err(ReadError::Protocol(
                "a control frame must be whole and at most 125 bytes",
            ));
        }
        let so_far = partial.as_ref().map_or(0, Vec::len) as u64;
        if len.saturating_add(if control { 0 } else { so_far }) > max as u64 {
            return Err(ReadError::TooLarge(max));
        }
        let len = len as usize;
        if buf.len() < at + 4 + len {
            buf.reserve(at + 4 + len - buf.len());
            return Ok(None);
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[at..at + 4]);
        buf.advance(at + 4);
        let mut payload = buf.split_to(len);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        match opcode {
            0x0 => {
                let Some(p) = partial.as_mut() else {
                    return Err(ReadError::Protocol(
                        "a continuation frame with nothing to continue",
                    ));
                };
                p.extend_from_slice(&payload);
                if fin {
                    let whole = partial.take().unwrap_or_default();
                    return String::from_utf8(whole)
                        .map(|t| Some(Incoming::Text(t)))
                        .map_err(|_| ReadError::NotUtf8);
                }
            }
            0x1 => {
                if partial.is_some() {
                    return Err(ReadError::Protocol("a new message inside a fragmented one"));
                }
                if fin {
                    return String::from_utf8(payload.to_vec())
                        .map(|t| Some(Incoming::Text(t)))
                        .map_err(|_| ReadError::NotUtf8);
                }
                *partial = Some(payload.to_vec());
            }
            0x2 => return Ok(Some(Incoming::Binary)),
            0x8 => return Ok(Some(Incoming::Close)),
            0x9 => return Ok(Some(Incoming::Ping(payload.freeze()))),
            0xA => return Ok(Some(Incoming::Pong)),
            _ => return Err(ReadError::Protocol("unknown opcode")),
        }
    }
}

/// Writes messages, a batch in one vectored write. What a cancelled [`Writer::send`] had not
/// yet written stays queued, and the next `send` (or [`Writer::flush`]) writes it first: a
/// frame is never cut short by a timeout.
pub struct Writer {
    io: WriteHalf<Io>,
    /// Messages queued and not yet wholly written.
    pending: Vec<Message>,
    /// Their frame headers (and close frames' bodies), and each message's range in it.
    heads: Vec<u8>,
    ranges: Vec<(usize, usize)>,
    /// Bytes of the queued frames already written.
    written: usize,
}

impl Writer {
    fn new(io: WriteHalf<Io>) -> Writer {
        Writer {
            io,
            pending: Vec::new(),
            heads: Vec::with_capacity(1024),
            ranges: Vec::new(),
            written: 0,
        }
    }

    /// Queues `msgs` after whatever is pending and writes it all; returns when everything is
    /// with the kernel.
    pub async fn send(&mut self, msgs: &[Message]) -> std::io::Result<()> {
        for m in msgs {
            let start = self.heads.len();
            let n = payload(m).len();
            match m {
                Message::Text(_) => head(&mut self.heads, 0x1, n),
                Message::Binary(_) => head(&mut self.heads, 0x2, n),
                Message::Ping(_) => head(&mut self.heads, 0x9, n),
                Message::Pong(_) => head(&mut self.heads, 0xA, n),
                Message::Close(c) => match c {
                    // The body (code and reason) goes with the header.
                    Some(c) => {
                        let reason = c.reason.as_str().as_bytes();
                        let reason = &reason[..reason.len().min(123)];
                        head(&mut self.heads, 0x8, 2 + reason.len());
                        self.heads.extend_from_slice(&c.code.to_be_bytes());
                        self.heads.extend_from_slice(reason);
                    }
                    None => head(&mut self.heads, 0x8, 0),
                },
            }
            self.ranges.push((start, self.heads.len()));
            self.pending.push(m.clone());
        }
        self.flush().await
    }

    /// Writes what is pending.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(self.pending.len() * 2);
        for (m, (a, b)) in self.pending.iter().zip(&self.ranges) {
            slices.push(IoSlice::new(&self.heads[*a..*b]));
            let p = payload(m);
            if !p.is_empty() {
                slices.push(IoSlice::new(p));
            }
        }
        let mut rest = &mut slices[..];
        IoSlice::advance_slices(&mut rest, self.written);
        while !rest.is_empty() {
            let n = self.io.write_vectored(rest).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.written += n;
            IoSlice::advance_slices(&mut rest, n);
        }
        drop(slices);
        self.pending.clear();
        self.ranges.clear();
        self.heads.clear();
        self.written = 0;
        Ok(())
    }

    /// Ends the sending direction (after a close frame).
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}

/// The bytes of a message's frame after its header (a close frame's body goes with the header).
fn payload(m: &Message) -> &[u8] {
    match m {
        Message::Text(t) => t.as_str().as_bytes(),
        Message::Binary(b) => b,
        // A control frame's payload is at most 125 bytes.
        Message::Ping(b) | Message::Pong(b) => &b[..b.len().min(125)],
        Message::Close(_) => &[],
    }
}

/// A server frame's header (final, unmasked) for a payload of `len` bytes.
fn head(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xFFFF {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    fn read_all(bytes: &[u8], max: usize) -> Vec<Result<Incoming, String>> {
        let mut buf = BytesMut::new();
        let mut partial = None;
        let mut out = Vec::new();
        // Byte by byte: a frame split anywhere is read the same.
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            loop {
                match parse(&mut buf, &mut partial, max) {
                    Ok(Some(m)) => out.push(Ok(m)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_accept_key_is_rfc_6455s_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn masked_frames_of_every_length_encoding_are_read_split_anywhere() {
        let long = "x".repeat(300);
        let mut bytes = frame(true, 0x1, b"hello", [1, 2, 3, 4]);
        bytes.extend(frame(true, 0x1, long.as_bytes(), [9, 8, 7, 6]));
        bytes.extend(frame(true, 0x9, b"p", [5, 5, 5, 5]));
        bytes.extend(frame(true, 0xA, b"", [0, 0, 0, 0]));
        bytes.extend(frame(false, 0x1, "fragmen".as_bytes(), [3, 1, 4, 1]));
        bytes.extend(frame(true, 0x9, b"", [0, 0, 0, 0]));
        bytes.extend(frame(true, 0x0, "ted é".as_bytes(), [2, 7, 1, 8]));
        bytes.extend(frame(true, 0x2, b"\x00\x01", [0, 0, 0, 0]));
        bytes.extend(frame(true, 0x8, &1000u16.to_be_bytes(), [1, 1, 1, 1]));
        let got = read_all(&bytes, 1024);
        assert_eq!(
            got,
            vec![
                Ok(Incoming::Text("hello".into())),
                Ok(Incoming::Text(long.clone())),
                Ok(Incoming::Ping(Bytes::from_static(b"p"))),
                Ok(Incoming::Pong),
                Ok(Incoming::Ping(Bytes::new())),
                Ok(Incoming::Text("fragmented é".into())),
                Ok(Incoming::Binary),
                Ok(Incoming::Close),
            ]
        );
        let big = "y".repeat(70_000);
        assert_eq!(
            read_all(&frame(true, 0x1, big.as_bytes(), [1, 2, 3, 4]), 100_000),
            vec![Ok(Incoming::Text(big))]
        );
    }

    #[test]
    fn frames_outside_the_protocol_are_refused() {
        let refused = |bytes: Vec<u8>, max: usize| -> String {
            match read_all(&bytes, max).pop() {
                Some(Err(e)) => e,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        // Unmasked.
        assert!(refused(vec![0x81, 0x01, b'a'], 1024).contains("masked"));
        // Reserved bit (a compressed frame).
        let mut f = frame(true, 0x1, b"a", [1, 2, 3, 4]);
        f[0] |= 0x40;
        assert!(refused(f, 1024).contains("reserved"));
        // Too large, told by the header before the payload arrives.
        assert!(refused(frame(true, 0x1, &[b'a'; 2000][..], [0; 4])[..10].to_vec(), 1024).contains("larger"));
        // Fragments adding up to too much.
        let mut f = frame(false, 0x1, &[b'a'; 600][..], [0; 4]);
        f.extend(frame(true, 0x0, &[b'a'; 600][..], [0; 4]));
        assert!(refused(f, 1024).contains("larger"));
        // A long or fragmented control frame.
        assert!(refused(frame(true, 0x9, &[0u8; 126][..], [0; 4]), 1024).contains("control"));
        assert!(refused(frame(false, 0x9, b"", [0; 4]), 1024).contains("control"));
        // Continuation of nothing; a text frame inside a fragmented message; unknown opcode.
        assert!(refused(frame(true, 0x0, b"a", [0; 4]), 1024).contains("continuation"));
        let mut f = frame(false, 0x1, b"a", [0; 4]);
        f.extend(frame(true, 0x1, b"b", [0; 4]));
        assert!(refused(f, 1024).contains("inside"));
        assert!(refused(frame(true, 0x3, b"", [0; 4]), 1024).contains("opcode"));
        // Not UTF-8.
        assert!(refused(frame(true, 0x1, &[0xFF, 0xFE], [7; 4]), 1024).contains("UTF-8"));
        // An absurd 64-bit length does not overflow.
        let mut f = vec![0x81, 0xFF];
        f.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(refused(f, 1024).contains("larger"));
    }

    #[test]
    fn server_headers_use_the_shortest_length_encoding() {
        let mut h = Vec::new();
        head(&mut h, 0x1, 125);
        head(&mut h, 0x1, 126);
        head(&mut h, 0x1, 65_536);
        assert_eq!(h[..2], [0x81, 125]);
        assert_eq!(h[2..6], [0x81, 126, 0, 126]);
        assert_eq!(h[6..16], [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
