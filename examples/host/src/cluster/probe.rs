//! Isolation probes: a UDP datagram to an echo service, or a TCP connection. Each runs in
//! a short-lived thread and reports back to the host loop.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc::Sender;
use std::time::Duration;

use vinfra_ha::IsolationAddress;

use super::Inbound;

/// Probes `address` (index `index`) within `timeout` and sends the outcome to `tx`.
pub fn spawn(address: IsolationAddress, index: usize, timeout: Duration, tx: Sender<Inbound>) {
    let spawned = std::thread::Builder::new()
        .name("ha-probe".into())
        .spawn(move || {
            let reachable = probe(&address, timeout);
            let _ = tx.send(Inbound::Probe {
                address: index,
                reachable,
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("probe thread: {e}");
    }
}

/// Whether `address` answers within `timeout`.
pub fn probe(address: &IsolationAddress, timeout: Duration) -> bool {
    match address {
        IsolationAddress::UdpEcho(a) => {
            let Ok(to) = a.parse::<SocketAddr>() else {
                return false;
            };
            udp_echo(to, timeout).unwrap_or(false)
        }
        IsolationAddress::TcpConnect(a) => {
            let Ok(to) = a.parse::<SocketAddr>() else {
                return false;
            };
            match TcpStream::connect_timeout(&to, timeout) {
                Ok(_) => true,
                // Refused: the address answered, so the network path is up.
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
            }
        }
    }
}

fn udp_echo(to: SocketAddr, timeout: Duration) -> std::io::Result<bool> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(to)?;
    s.set_read_timeout(Some(timeout))?;
    let token: [u8; 8] = rand::random();
    s.send(&token)?;
    let mut buf = [0u8; 64];
    loop {
        match s.recv(&mut buf) {
            Ok(n) if buf[..n] == token => return Ok(true),
            Ok(_) => continue,
            Err(_) => return Ok(false),
        }
    }
}
