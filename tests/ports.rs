//! Listen addresses a node cannot have: a second node on a port already in use fails to start,
//! and says which address and why.

mod common;

use common::NodeDir;
use hermes::{Error, Runtime};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("executor")
        .block_on(f)
}

/// A port that was free a moment ago (bound to port 0, then released).
fn free_port(udp: bool) -> u16 {
    if udp {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        s.local_addr().expect("addr").port()
    } else {
        let s = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        s.local_addr().expect("addr").port()
    }
}

/// Starts one node on `addr`, then a second one on the same address, which must fail naming
/// it and the cause; the first keeps running.
fn second_node_is_refused(addr: &str) {
    let (n1, n2) = (NodeDir::new(), NodeDir::new());
    let listen = vec![addr.parse().expect("addr")];
    block_on(async {
        let a = Runtime::builder(n1.config().with_listen(listen.clone()))
            .start()
            .await
            .expect("first node starts");
        assert!(
            common::eventually(std::time::Duration::from_secs(10), || async {
                !a.listen_addrs().await.unwrap().is_empty()
            })
            .await
        );
        let err = Runtime::builder(n2.config().with_listen(listen))
            .start()
            .await
            .expect_err("a second node on the same port must not start");
        assert!(matches!(err, Error::Network(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("cannot listen on {addr}: address in use")),
            "{text}"
        );
        // The first node is unaffected, and its data dir is released only at its shutdown.
        a.identity().await.unwrap();
        a.shutdown().await.unwrap();
    });
}

#[test]
fn second_node_on_the_same_tcp_port_fails_to_start() {
    second_node_is_refused(&format!("/ip4/127.0.0.1/tcp/{}", free_port(false)));
}

#[test]
fn second_node_on_the_same_quic_port_fails_with_the_cause() {
    second_node_is_refused(&format!("/ip4/127.0.0.1/udp/{}/quic-v1", free_port(true)));
}

#[test]
fn wildcard_tcp_clashes_with_a_node_on_loopback() {
    // 0.0.0.0:P includes 127.0.0.1:P; libp2p would otherwise let both bind with SO_REUSEPORT.
    let port = free_port(false);
    let (n1, n2) = (NodeDir::new(), NodeDir::new());
    block_on(async {
        let a = Runtime::builder(
            n1.config()
                .with_listen(vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()]),
        )
        .start()
        .await
        .expect("first node starts");
        let wildcard = format!("/ip4/0.0.0.0/tcp/{port}");
        let err = Runtime::builder(n2.config().with_listen(vec![wildcard.parse().unwrap()]))
            .start()
            .await
            .expect_err("the wildcard address overlaps the first node's");
        assert!(
            err.to_string()
                .contains(&format!("cannot listen on {wildcard}: address in use")),
            "{err}"
        );
        a.shutdown().await.unwrap();
    });
}
