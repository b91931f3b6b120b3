//! `GET /api/vcenter/vm/{vm}/console`: the VM's serial console as a WebSocket, proxied
//! to the console WebSocket of the host that runs it (the browser never holds the
//! cluster's API token). Text and binary frames pass both ways unchanged.

use std::net::TcpStream;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::http::HeaderValue;

use super::{blocking, ApiError, ApiResult, AppState};
use crate::auth::Principal;
use crate::model::Role;

/// How long a read of the host's socket waits before the browser's input is looked at.
const READ_SLICE: Duration = Duration::from_millis(30);
/// Frames queued towards the browser before the host's side waits.
const QUEUE: usize = 256;

type HostSocket = tungstenite::WebSocket<TcpStream>;

/// A frame either way.
enum Frame {
    Text(String),
    Binary(Vec<u8>),
}

/// `GET /api/vcenter/vm/{vm}/console` (operator): WebSocket upgrade.
#[utoipa::path(get, path = "/api/vcenter/vm/{vm}/console", tag = "vm", params(("vm" = String, Path)),
    responses((status = 101, description = "the console as a WebSocket"), (status = 409, body = super::ErrorBody)))]
pub async fn console(
    State(state): State<AppState>,
    who: Principal,
    Path(name): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    who.require(Role::Operator)?;
    let ws = ws.map_err(|e| ApiError::malformed(e.body_text(), None))?;
    let vm = state
        .store
        .vm(&name)?
        .ok_or_else(|| ApiError::not_found(format!("no VM named {name}")))?;
    let host = vm
        .host
        .clone()
        .ok_or_else(|| ApiError::conflict(format!("VM {name} is {}: no console", vm.info.state)))?;
    let client = state
        .hosts
        .client(&host)
        .ok_or_else(|| ApiError::conflict(format!("host {host} is not polled")))?;
    let authority = client.authority().to_string();
    let bearer = format!("Bearer {}", client.token().as_str());
    let vm_name = name.clone();
    // Connected before the upgrade, so that a refusal is an HTTP error, not a closed socket.
    let socket = blocking(move || connect(&authority, &bearer, &vm_name)).await??;
    state.events.action(
        state.now_ms(),
        &who.name,
        "vm.console_opened",
        &name,
        format!("{} opened the console of VM {name}", who.name),
        serde_json::json!({ "host": host }),
    )?;
    Ok(ws
        .on_upgrade(move |browser| bridge(browser, socket))
        .into_response())
}

fn connect(authority: &str, bearer: &str, vm: &str) -> ApiResult<HostSocket> {
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "host_unreachable",
            format!("console of {vm}: {e}"),
        )
    };
    let url = format!("ws://{authority}/api/v1/vms/{vm}/console");
    let mut request = url.as_str().into_client_request().map_err(|e| bad(&e))?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(bearer).map_err(|e| bad(&e))?,
    );
    let stream = TcpStream::connect(authority).map_err(|e| bad(&e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| bad(&e))?;
    let (socket, _) = match tungstenite::client(request, stream) {
        Ok(pair) => pair,
        Err(HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response.into_body().unwrap_or_default();
            return Err(vinfra_host::api::client::api_error(
                status,
                &String::from_utf8_lossy(&body),
            )
            .into());
        }
        Err(e) => return Err(bad(&e)),
    };
    socket
        .get_ref()
        .set_read_timeout(Some(READ_SLICE))
        .map_err(|e| bad(&e))?;
    Ok(socket)
}

async fn bridge(mut browser: WebSocket, host: HostSocket) {
    let (to_browser, mut from_host) = mpsc::channel::<Frame>(QUEUE);
    let (to_host, from_browser) = std_mpsc::channel::<Frame>();
    // The host's side is a blocking socket: a thread of its own, ending when either
    // side closes.
    let pump = std::thread::Builder::new()
        .name("console proxy".into())
        .spawn(move || host_side(host, &to_browser, &from_browser));
    if pump.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = from_host.recv() => {
                let message = match frame {
                    Some(Frame::Text(t)) => Message::Text(t.into()),
                    Some(Frame::Binary(b)) => Message::Binary(b.into()),
                    None => break,
                };
                if browser.send(message).await.is_err() {
                    break;
                }
            }
            message = browser.recv() => {
                let frame = match message {
                    Some(Ok(Message::Text(t))) => Frame::Text(t.as_str().to_string()),
                    Some(Ok(Message::Binary(b))) => Frame::Binary(b.to_vec()),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                };
                if to_host.send(frame).is_err() {
                    break;
                }
            }
        }
    }
    // Dropping `to_host` tells the host's side to close.
    drop(to_host);
    let _ = browser.send(Message::Close(None)).await;
}

fn host_side(
    mut host: HostSocket,
    to_browser: &mpsc::Sender<Frame>,
    from_browser: &std_mpsc::Receiver<Frame>,
) {
    use tungstenite::Message as M;
    loop {
        match host.read() {
            Ok(M::Text(t)) => {
                if to_browser
                    .blocking_send(Frame::Text(t.as_str().to_string()))
                    .is_err()
                {
                    break;
                }
            }
            Ok(M::Binary(b)) => {
                if to_browser.blocking_send(Frame::Binary(b.to_vec())).is_err() {
                    break;
                }
            }
            Ok(M::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
        loop {
            match from_browser.try_recv() {
                Ok(Frame::Text(t)) => {
                    if host.send(M::Text(t.into())).is_err() {
                        return;
                    }
                }
                Ok(Frame::Binary(b)) => {
                    if host.send(M::Binary(b.into())).is_err() {
                        return;
                    }
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => {
                    let _ = host.close(None);
                    let _ = host.flush();
                    return;
                }
            }
        }
    }
    let _ = host.close(None);
}
