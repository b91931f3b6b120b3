//! The VM console as a WebSocket: guest output as text frames (UTF-8 kept whole across
//! chunks), text or binary frames to the guest's serial input; open consoles are
//! counted so that a stopping server waits for their close frames.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use tokio::sync::watch;

use super::{call, AppState, VmName, BODY_LIMIT};
use crate::api::console::Console;
use crate::api::error::{ApiError, Result};

/// One open console, counted in [`AppState::consoles`] while it lives.
pub(super) struct ConsoleOpen(Arc<AtomicUsize>);

impl ConsoleOpen {
    pub(super) fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for ConsoleOpen {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /vms/NAME/console`: WebSocket; text frames of guest output, text or binary frames
/// to the guest's serial input.
#[utoipa::path(get, path = "/api/v1/vms/{name}/console", tag = "vms",
    params(("name" = String, Path, description = "the VM")),
    responses((status = 101, description = "WebSocket"), (status = 400, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody), (status = 409, description = "not running here", body = crate::api::ErrorBody)))]
pub(super) async fn console(
    State(st): State<AppState>,
    VmName(name): VmName,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::Malformed(format!("the console is a WebSocket: {}", e.body_text()))
    })?;
    let console = call(&st, move |s| s.console(&name)).await?;
    let stopping = st.stopping.clone();
    // Counted from now: a stop that comes before the upgrade completes still waits.
    let open = ConsoleOpen::new(&st.consoles);
    Ok(upgrade
        .max_message_size(BODY_LIMIT)
        .on_upgrade(move |socket| async move {
            pump_console(socket, console, stopping).await;
            drop(open);
        }))
}

async fn pump_console(
    mut socket: WebSocket,
    mut console: Console,
    mut stopping: watch::Receiver<bool>,
) {
    let mut utf8 = Utf8Carry::default();
    loop {
        tokio::select! {
            output = console.recv_output() => {
                let Some(bytes) = output else {
                    let _ = socket.send(close(1000, "the console closed")).await;
                    return;
                };
                let lost = console.take_lost();
                let mut text = String::new();
                if lost > 0 {
                    text = format!("\r\n[vinfra: {lost} bytes of console output lost]\r\n");
                }
                text.push_str(&utf8.decode(&bytes));
                if !text.is_empty() && socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            message = socket.recv() => {
                let input = match message {
                    Some(Ok(Message::Text(t))) => t.as_str().as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                if console.send_input(input).await.is_err() {
                    let _ = socket.send(close(1000, "the console closed")).await;
                    return;
                }
            }
            _ = stopping.changed() => {
                let _ = socket.send(close(1001, "the host API is stopping")).await;
                return;
            }
        }
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// Turns chunks of bytes into text frames without splitting a character that straddles
/// two chunks; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub(super) struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    pub(super) fn decode(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // An incomplete character at the end: wait for its rest.
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Utf8Carry;

    #[test]
    fn a_character_split_between_chunks_stays_whole() {
        let mut carry = Utf8Carry::default();
        let e_acute = "é".as_bytes();
        assert_eq!(carry.decode(&[b'a', e_acute[0]]), "a");
        assert_eq!(carry.decode(&[e_acute[1], b'b']), "éb");
        let euro = "€".as_bytes();
        assert_eq!(carry.decode(&euro[..1]), "");
        assert_eq!(carry.decode(&euro[1..2]), "");
        assert_eq!(carry.decode(&euro[2..]), "€");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut carry = Utf8Carry::default();
        assert_eq!(
            carry.decode(&[b'x', 0xff, b'y', 0xc3, b'z']),
            "x\u{fffd}y\u{fffd}z"
        );
        assert_eq!(carry.decode(b""), "");
    }
}
