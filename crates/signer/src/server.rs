//! The signer's Unix-socket server: one thread accepting, one thread per connection (at most
//! [`CONNECTIONS_MAX`]), every request answered under one lock by the [`Signer`].
//!
//! The socket is created mode 0600 in a directory that must not be writable by group or others;
//! a stale socket file is removed only when nobody answers on it. Each connection's peer uid is
//! read with `SO_PEERCRED` and refused unless it is in `allowed_uids`.

use crate::clock::Clock;
use crate::config::Config;
use crate::keystore::Unlocked;
use crate::service::{Signer, StartError};
use kinko_signer_proto::protocol::{read_frame_bytes, write_frame, FrameError, Request, Response};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Connections served at once; more are told `BUSY` and closed.
pub const CONNECTIONS_MAX: usize = 16;
/// A connection with no request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Writing one answer may take at most this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests served on one connection before it is closed (the client reconnects).
pub const REQUESTS_PER_CONNECTION_MAX: u64 = 1_000_000;
/// How often the accept loop looks at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(20);

type Shared = Arc<Mutex<Signer>>;

#[derive(Default)]
struct Connections {
    streams: HashMap<u64, UnixStream>,
    threads: Vec<JoinHandle<()>>,
}

struct Ctx {
    signer: Shared,
    allowed: Vec<u32>,
    stop: Arc<AtomicBool>,
    active: AtomicUsize,
    next_id: AtomicU64,
    conns: Mutex<Connections>,
}

/// Creates the listening socket after checking its directory and any file in its place.
fn bind(path: &Path) -> Result<UnixListener, StartError> {
    let bad = |reason: String| StartError::Socket {
        path: path.to_owned(),
        reason,
    };
    let io = |source| StartError::SocketIo {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).map_err(io)?;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(bad(format!(
            "directory {} is writable by group or others",
            dir.display()
        )));
    }
    let me = nix::unistd::getuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(bad(format!(
            "directory {} belongs to another user",
            dir.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => return Err(bad("another process is listening on it".into())),
            Err(_) => std::fs::remove_file(path).map_err(io)?,
        },
        Ok(_) => return Err(bad("a file that is not a socket is in the way".into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    listener.set_nonblocking(true).map_err(io)?;
    Ok(listener)
}

/// A running server, for tests and embedding. Stopping it closes every connection.
pub struct Server {
    socket: PathBuf,
    ctx: Arc<Ctx>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Opens the signer (log replay, `Started` logged), binds the socket and starts accepting.
    pub fn start(config: Config, keys: Unlocked, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
        let socket = config.socket.clone();
        let allowed = config.allowed_uids.clone();
        let signer = Signer::open(config, keys, clock)?;
        let listener = bind(&socket)?;
        let ctx = Arc::new(Ctx {
            signer: Arc::new(Mutex::new(signer)),
            allowed,
            stop: Arc::new(AtomicBool::new(false)),
            active: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(Connections::default()),
        });
        let c = ctx.clone();
        let accept = std::thread::Builder::new()
            .name("signer-accept".into())
            .spawn(move || accept_loop(&c, &listener))
            .map_err(|source| StartError::SocketIo {
                path: socket.clone(),
                source,
            })?;
        Ok(Server {
            socket,
            ctx,
            accept: Some(accept),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The stop flag (set it to stop, as [`Server::stop`] does).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.ctx.stop.clone()
    }

    /// Runs `f` with the signer (tests look at its state this way).
    pub fn with_signer<T>(&self, f: impl FnOnce(&Signer) -> T) -> T {
        let g = self.ctx.signer.lock().unwrap_or_else(|e| e.into_inner());
        f(&g)
    }

    /// Blocks until the stop flag is set and the server has stopped.
    pub fn wait(mut self) {
        self.join();
    }

    /// Stops accepting, closes every connection, waits for their threads, removes the socket.
    pub fn stop(mut self) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        self.join();
    }

    fn join(&mut self) {
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        self.join();
    }
}

/// Serves until `stop` is set (the binary sets it on SIGTERM / SIGINT).
pub fn serve(
    config: Config,
    keys: Unlocked,
    clock: Arc<dyn Clock>,
    stop: Arc<AtomicBool>,
) -> Result<(), StartError> {
    let server = Server::start(config, keys, clock)?;
    let flag = server.stop_flag();
    while !stop.load(Ordering::SeqCst) && !flag.load(Ordering::SeqCst) {
        std::thread::sleep(ACCEPT_POLL);
    }
    server.stop();
    Ok(())
}

fn accept_loop(ctx: &Arc<Ctx>, listener: &UnixListener) {
    while !ctx.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => admit(ctx, stream),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
        reap(ctx);
    }
    // Close every connection, then wait for their threads.
    let threads = {
        let mut c = ctx.conns.lock().unwrap_or_else(|e| e.into_inner());
        for s in c.streams.values() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        std::mem::take(&mut c.threads)
    };
    for t in threads {
        let _ = t.join();
    }
}

/// Joins connection threads that have finished.
fn reap(ctx: &Ctx) {
    let mut c = ctx.conns.lock().unwrap_or_else(|e| e.into_inner());
    let (done, running): (Vec<_>, Vec<_>) = std::mem::take(&mut c.threads)
        .into_iter()
        .partition(|t| t.is_finished());
    c.threads = running;
    drop(c);
    for t in done {
        let _ = t.join();
    }
}

/// Answers an error before the connection is closed (best effort: the peer may be gone).
fn answer_error(stream: &mut UnixStream, code: &str, message: String) {
    let _ = write_frame(
        stream,
        &Response::Error {
            code: code.into(),
            message,
        },
    );
}

fn admit(ctx: &Arc<Ctx>, mut stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let uid = match getsockopt(&stream, PeerCredentials) {
        Ok(c) => c.uid(),
        Err(_) => return,
    };
    if !ctx.allowed.contains(&uid) {
        ctx.signer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peer_refused(uid);
        answer_error(
            &mut stream,
            "PEER_REFUSED",
            "this uid may not use the signer".into(),
        );
        return;
    }
    if ctx.active.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
        ctx.active.fetch_sub(1, Ordering::SeqCst);
        answer_error(
            &mut stream,
            "BUSY",
            format!("the signer serves at most {CONNECTIONS_MAX} connections"),
        );
        return;
    }
    let id = ctx.next_id.fetch_add(1, Ordering::SeqCst);
    let Ok(clone) = stream.try_clone() else {
        ctx.active.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let mut conns = ctx.conns.lock().unwrap_or_else(|e| e.into_inner());
    conns.streams.insert(id, clone);
    let c = ctx.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("signer-conn-{id}"))
        .spawn(move || {
            connection(&c, stream, uid);
            c.conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .streams
                .remove(&id);
            c.active.fetch_sub(1, Ordering::SeqCst);
        });
    match spawned {
        Ok(h) => conns.threads.push(h),
        Err(_) => {
            conns.streams.remove(&id);
            ctx.active.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

fn connection(ctx: &Ctx, mut stream: UnixStream, uid: u32) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    for _ in 0..REQUESTS_PER_CONNECTION_MAX {
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
        let body = match read_frame_bytes(&mut stream) {
            // A register_totp frame holds a secret: wipe it once parsed.
            Ok(b) => zeroize::Zeroizing::new(b),
            Err(FrameError::TooLarge(n)) => {
                // The rest of the frame cannot be skipped safely: answer and close.
                answer_error(
                    &mut stream,
                    "FRAME_TOO_LARGE",
                    format!("a frame of {n} bytes is larger than the limit"),
                );
                return;
            }
            Err(_) => return,
        };
        let response = match serde_json::from_slice::<Request>(&body) {
            Ok(req) => match ctx.signer.lock() {
                Ok(mut s) => s.handle(req, uid),
                // A request that panicked inside the signer: refuse everything until restarted.
                Err(_) => Response::Error {
                    code: "SIGNER_FAILED".into(),
                    message: "the signer failed; restart it".into(),
                },
            },
            Err(e) => Response::Error {
                code: "BAD_REQUEST".into(),
                message: format!("the request could not be read: {e}"),
            },
        };
        if write_frame(&mut stream, &response).is_err() {
            return;
        }
    }
}
