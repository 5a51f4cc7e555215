//! The socket: peer uids, framing errors, the connection limit.

use crate::harness::*;
use kinko_signer::server::CONNECTIONS_MAX;
use kinko_signer_proto::protocol::{read_frame, write_frame, Request, Response, FRAME_BYTES_MAX};
use kinko_signer_proto::SignerClient;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;

#[test]
fn socket_is_private() {
    let env = Env::new();
    let mode = std::fs::metadata(env.socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_uid_not_allowed_is_refused() {
    let me = nix::unistd::getuid().as_raw();
    let env = Env::with_uids(Some(vec![me.wrapping_add(1)]));
    let mut client = env.client();
    match client.call(&Request::Hello) {
        // The server answers PEER_REFUSED and closes, maybe before it reads our request.
        Ok(Response::Error { code, .. }) => assert_eq!(code, "PEER_REFUSED"),
        Ok(other) => panic!("{other:?}"),
        Err(_) => {}
    }
    let refused = wait_for(std::time::Duration::from_secs(5), || {
        let v = log_entries(&env.log_path(), "peer_refused");
        (!v.is_empty()).then_some(v)
    })
    .expect("the refusal is logged");
    assert_eq!(refused[0]["entry"]["uid"], me);
}

#[test]
fn bad_frames_get_errors_and_the_server_keeps_serving() {
    let env = Env::new();
    let mut client = env.client();
    for body in [
        &b"not json"[..],
        br#"{"type":"launch"}"#,
        br#"{"user":1,"type":"status"}"#,
        b"",
    ] {
        let s = client.stream();
        s.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        s.write_all(body).unwrap();
        match read_frame::<Response>(s).unwrap() {
            Response::Error { code, .. } => assert_eq!(code, "BAD_REQUEST"),
            other => panic!("{other:?}"),
        }
    }
    // The same connection still answers.
    assert!(matches!(
        client.call(&Request::Hello).unwrap(),
        Response::Hello { .. }
    ));
    // An oversized frame: an error, then the connection is closed.
    let s = client.stream();
    s.write_all(&(FRAME_BYTES_MAX as u32 + 1).to_be_bytes()).unwrap();
    match read_frame::<Response>(s).unwrap() {
        Response::Error { code, .. } => assert_eq!(code, "FRAME_TOO_LARGE"),
        other => panic!("{other:?}"),
    }
    assert!(read_frame::<Response>(client.stream()).is_err());
    // A frame cut short, then a hang-up.
    let mut c2 = env.client();
    c2.stream().write_all(&100u32.to_be_bytes()).unwrap();
    c2.stream().write_all(b"{\"type\"").unwrap();
    drop(c2);
    // Others are served.
    assert!(matches!(env.call(&Request::Status), Response::Status { .. }));
}

#[test]
fn connections_are_bounded() {
    let env = Env::new();
    let mut held: Vec<SignerClient> = Vec::new();
    for _ in 0..CONNECTIONS_MAX {
        let mut c = env.client();
        assert!(matches!(c.call(&Request::Hello).unwrap(), Response::Hello { .. }));
        held.push(c);
    }
    let mut extra = env.client();
    match extra.call(&Request::Hello) {
        Ok(Response::Error { code, .. }) => assert_eq!(code, "BUSY"),
        Ok(other) => panic!("{other:?}"),
        Err(_) => {}
    }
    held.pop();
    // A slot frees up once a connection closes.
    let ok = wait_for(std::time::Duration::from_secs(5), || {
        let mut c = env.client();
        matches!(c.call(&Request::Hello), Ok(Response::Hello { .. })).then_some(())
    });
    assert!(ok.is_some());
}

#[test]
fn frames_round_trip_over_a_socket_pair() {
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
    write_frame(&mut a, &Request::Status).unwrap();
    assert_eq!(read_frame::<Request>(&mut b).unwrap(), Request::Status);
}
