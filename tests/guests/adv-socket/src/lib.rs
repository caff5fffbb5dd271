//! adv-socket: holding no capability at all, it tries the network directly through WASI
//! sockets: a TCP connection to a loopback listener the test opened, the same through the
//! name `localhost`, a UDP datagram to a loopback socket the test opened, a TCP listener
//! of its own, and a DNS lookup. Every attempt must fail in the guest, nothing may ever
//! reach the test's sockets, and the guest ends `no-op`. Sockets are ambient authority
//! the sandbox never grants, so each denial must also be traced (interface `sockets`,
//! `allowed = false`).

use attack_report::Report;
use runwarden_sdk::prelude::*;
use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

#[derive(serde::Deserialize)]
struct Params {
    /// A loopback TCP listener, `127.0.0.1:port`.
    tcp: String,
    /// A loopback UDP socket, `127.0.0.1:port`.
    udp: String,
}

struct Socket;

impl Runbook for Socket {
    type Params = Params;

    fn manifest() -> Manifest {
        Manifest::new(
            "adv-socket",
            "0.1.0",
            "Try to open network sockets without any grant",
        )
        .params_schema(serde_json::json!({
            "type": "object", "required": ["tcp", "udp"], "additionalProperties": false,
            "properties": {"tcp": {"type": "string"}, "udp": {"type": "string"}}
        }))
    }

    fn run(p: Params) -> Result<Outcome, RunError> {
        let mut r = Report::new();
        let connect = |addr: &str| -> std::io::Result<String> {
            let addr = addr
                .parse()
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.write_all(b"hello from the sandbox\n")?;
            Ok(format!("connected to {addr}"))
        };
        r.attack("tcp-connect", connect(&p.tcp));
        let port = p.tcp.rsplit(':').next().unwrap_or_default();
        r.attack(
            "tcp-connect-by-name",
            TcpStream::connect(format!("localhost:{port}")).map(|_| "connected".to_string()),
        );
        r.attack(
            "udp-send",
            UdpSocket::bind("0.0.0.0:0")
                .and_then(|s| s.send_to(b"hello from the sandbox", &p.udp))
                .map(|n| format!("sent {n} bytes")),
        );
        r.attack(
            "tcp-listen",
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| format!("listening on {a}")),
        );
        r.attack(
            "dns-lookup",
            ("example.org", 80)
                .to_socket_addrs()
                .map(|a| format!("{} addresses", a.count())),
        );
        Ok(r.outcome("open sockets"))
    }
}

runwarden_sdk::export_runbook!(Socket);
