//! `vinfra vm console NAME`: the VM's serial console over the API's WebSocket. Guest
//! output goes to stdout; stdin (raw on a terminal) goes to the guest; `Ctrl-]` leaves,
//! as in telnet and virsh. Input that ends (a pipe) does not end the session: the output
//! is followed until the host closes the console.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, TryRecvError};
use std::time::Duration;

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;
use tungstenite::Message;
use vinfra_host::terminal::{install_stop_signals, stop_requested, RawMode};

use crate::client::{api_error, CliError, Client};

/// `Ctrl-]`.
const ESCAPE: u8 = 0x1d;
/// How long a read of the socket waits before stdin is looked at again.
pub const READ_SLICE: Duration = Duration::from_millis(30);

/// The console of VM `name` on the host `client` talks to.
pub fn attach(client: &Client, name: &str) -> Result<(), CliError> {
    let io = |what: &str, e: &dyn std::fmt::Display| CliError::Transport(format!("{what}: {e}"));
    let url = format!("ws://{}/api/v1/vms/{name}/console", client.authority());
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| io(&url, &e))?;
    let bearer = HeaderValue::from_str(&format!("Bearer {}", client.token().as_str()))
        .map_err(|e| io("token", &e))?;
    request.headers_mut().insert("Authorization", bearer);
    let stream = TcpStream::connect(client.authority()).map_err(|e| io(client.authority(), &e))?;
    let (mut socket, _) = match tungstenite::client(request, stream) {
        Ok(pair) => pair,
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response.into_body().unwrap_or_default();
            return Err(api_error(status, &String::from_utf8_lossy(&body)).into());
        }
        Err(e) => return Err(io(&url, &e)),
    };
    socket
        .get_ref()
        .set_read_timeout(Some(READ_SLICE))
        .map_err(|e| io("socket", &e))?;
    session(&mut socket, name)
}

/// The console session on an open WebSocket (plain or TLS) whose reads time out after
/// [`READ_SLICE`]: guest output to stdout, stdin to the guest, until `Ctrl-]`, a stop
/// signal or the other side's close.
pub fn session<S: Read + Write>(
    socket: &mut tungstenite::WebSocket<S>,
    name: &str,
) -> Result<(), CliError> {
    let io = |what: &str, e: &dyn std::fmt::Display| CliError::Transport(format!("{what}: {e}"));
    install_stop_signals().map_err(|e| io("signals", &e))?;
    let raw = RawMode::enable(0).map_err(|e| io("terminal", &e))?;
    if raw.is_some() {
        eprint!("connected to {name} (Ctrl-] leaves)\r\n");
    }
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    // A thread of its own: reading stdin blocks, and it may never return (a terminal
    // nobody types on); the process exit ends it.
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 1024];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut stdout = std::io::stdout().lock();
    let mut input_open = true;
    let result = loop {
        if stop_requested() {
            let _ = socket.close(None);
            break Ok(());
        }
        match socket.read() {
            Ok(Message::Text(text)) => {
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
            }
            Ok(Message::Binary(bytes)) => {
                let _ = stdout.write_all(&bytes);
                let _ = stdout.flush();
            }
            Ok(Message::Close(_)) => break Ok(()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                break Ok(())
            }
            Err(e) => break Err(io("console", &e)),
        }
        while input_open {
            match rx.try_recv() {
                Ok(mut bytes) => {
                    let leave = bytes.iter().position(|&b| b == ESCAPE);
                    if let Some(at) = leave {
                        bytes.truncate(at);
                    }
                    if !bytes.is_empty() {
                        let message = match String::from_utf8(bytes) {
                            Ok(text) => Message::Text(text.into()),
                            Err(e) => Message::Binary(e.into_bytes().into()),
                        };
                        if let Err(e) = socket.send(message) {
                            return Err(io("console", &e));
                        }
                    }
                    if leave.is_some() {
                        let _ = socket.close(None);
                        drop(raw);
                        return Ok(());
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => input_open = false,
            }
        }
    };
    drop(raw);
    result
}
