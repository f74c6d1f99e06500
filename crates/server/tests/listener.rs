//! The listener under bad input: a malformed or oversized frame closes that connection, and
//! the node goes on serving everyone else. Raw bytes over 127.0.0.1, as a hostile client
//! would send them; a one-node server started in this process.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, RequestHeader, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use tandem_server::runtime::{self, ServerConfig};

fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn api_versions_frame(correlation_id: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(3)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("listener-test")));
    let body = RequestKind::ApiVersions(
        ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    let frame = tandem_protocol::encode_request(&header, &body).unwrap();
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    out
}

/// Sends an ApiVersions request and reads the answer: the server is alive and serving.
fn api_versions_answered(address: SocketAddr, correlation_id: i32) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    if stream
        .write_all(&api_versions_frame(correlation_id))
        .is_err()
    {
        return false;
    }
    let mut length = [0u8; 4];
    if stream.read_exact(&mut length).is_err() {
        return false;
    }
    let mut frame = vec![0u8; u32::from_be_bytes(length) as usize];
    if stream.read_exact(&mut frame).is_err() {
        return false;
    }
    match tandem_protocol::decode_response(ApiKey::ApiVersions, 3, bytes::Bytes::from(frame)) {
        Ok((id, ResponseKind::ApiVersions(response))) => {
            id == correlation_id && response.error_code == 0
        }
        _ => false,
    }
}

/// The server closed this connection: reads end with EOF or a reset.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let address = free_address();
    let config = ServerConfig {
        node_id: 1,
        listen: address,
        advertised: None,
        data_dir: dir.path().to_path_buf(),
        voters: BTreeMap::from([(1, address.to_string())]),
        max_frame_bytes: 64 * 1024,
        admin_listen: None,
        compaction_interval: Duration::from_secs(30),
        tuning: Default::default(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(runtime::run(config, stopped));

    let checks = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !api_versions_answered(address, 1) {
            assert!(Instant::now() < deadline, "the server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A client that stays connected throughout and keeps being served.
        let mut bystander = TcpStream::connect(address).unwrap();
        bystander
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();

        let hostile: Vec<(&str, Vec<u8>)> = vec![
            ("a frame too short for a header", vec![0, 0, 0, 3, 0, 18, 0]),
            (
                "an unknown API key",
                [&[0u8, 0, 0, 8][..], &[0x7f, 0x7f, 0, 0, 0, 0, 0, 1]].concat(),
            ),
            (
                "an allocation bomb (Metadata v0 claiming 54 million topics)",
                [
                    &[0u8, 0, 0, 14][..],
                    &[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x03, 0x3c, 0x0c, 0x00],
                ]
                .concat(),
            ),
            (
                "a frame over the size limit",
                (10_000_000u32).to_be_bytes().to_vec(),
            ),
            ("a negative length", (-5i32).to_be_bytes().to_vec()),
        ];
        for (what, bytes) in hostile {
            let mut attacker = TcpStream::connect(address).unwrap();
            attacker.write_all(&bytes).unwrap();
            assert!(
                closed_by_server(&mut attacker),
                "{what}: connection left open"
            );
            assert!(
                api_versions_answered(address, 2),
                "{what}: the server stopped serving new clients"
            );
        }
        // The bystander's connection is untouched.
        bystander.write_all(&api_versions_frame(9)).unwrap();
        let mut length = [0u8; 4];
        bystander
            .read_exact(&mut length)
            .expect("the bystander is still served");
    });
    checks.await.unwrap();
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
