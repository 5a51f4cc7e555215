//! The client kinko uses to talk to the signer: one blocking Unix-socket connection, one request
//! and one response at a time, with read and write timeouts.

use crate::protocol::{read_frame, write_frame, FrameError, Request, Response};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a request may take to send, and its answer to arrive.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("signer connection: {0}")]
    Io(#[from] io::Error),
    #[error("signer protocol: {0}")]
    Frame(#[from] FrameError),
}

#[derive(Debug)]
pub struct SignerClient {
    stream: UnixStream,
}

impl SignerClient {
    pub fn connect(socket: &Path) -> io::Result<SignerClient> {
        SignerClient::connect_with_timeout(socket, CALL_TIMEOUT)
    }

    pub fn connect_with_timeout(socket: &Path, timeout: Duration) -> io::Result<SignerClient> {
        let stream = UnixStream::connect(socket)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(SignerClient { stream })
    }

    /// Sends one request and reads its answer. After an error the connection should be dropped.
    pub fn call(&mut self, req: &Request) -> Result<Response, ClientError> {
        write_frame(&mut self.stream, req)?;
        Ok(read_frame(&mut self.stream)?)
    }

    /// The underlying stream (tests send raw bytes through it).
    pub fn stream(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}
