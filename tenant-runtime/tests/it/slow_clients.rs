//! Slow clients cannot hold a storefront: a client that dribbles its headers (slowloris) is
//! cut off after the header deadline, and buyers are served even when such clients had taken
//! every connection the pod accepts.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Options, TestApp};

/// Sends a request's headers one line every 200 ms for up to ten seconds; whether the server
/// closed the connection before the client was done.
async fn dribble(address: String) -> bool {
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    if stream
        .write_all(b"GET /api/events HTTP/1.1\r\nHost: shop\r\n")
        .await
        .is_err()
    {
        return true;
    }
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let line = format!("X-Slow-{i}: still typing\r\n");
        if stream.write_all(line.as_bytes()).await.is_err() {
            return true;
        }
        let mut buffer = [0u8; 512];
        // A request still being sent gets no answer: anything the server sends now (an error
        // answer, end of stream, a reset) means it gave up on the connection.
        if tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer))
            .await
            .is_ok()
        {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_dribbling_its_headers_is_cut_off_and_buyers_are_still_served() {
    let app = TestApp::spawn_with(Options {
        env: &[
            ("TIQZY_HEADER_READ_TIMEOUT_MS", "1000"),
            ("TIQZY_MAX_CONNECTIONS", "4"),
        ],
        ..Options::default()
    })
    .await;
    let address = app.url.trim_start_matches("http://").to_owned();
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..4 {
        slow.spawn(dribble(address.clone()));
    }
    // Every connection the pod accepts is taken; a buyer arriving now waits for them to be cut.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let buyer = reqwest::Client::new()
        .get(format!("{}/api/events", app.url))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("the buyer is answered");
    assert_eq!(buyer.status(), 200);
    while let Some(cut) = slow.join_next().await {
        assert!(
            cut.expect("task"),
            "a client still sending headers after ten seconds was not cut off"
        );
    }
}
