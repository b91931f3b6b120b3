//! A response body written by blocking code: [`body_channel`] gives a [`BodyWriter`]
//! (`std::io::Write`, for a thread that reads a guest file out of a backup, or copies a
//! host's answer) and a [`BodyStream`] that axum sends as the body while it is written.
//!
//! At most [`BODY_QUEUE`] chunks of [`BODY_CHUNK`] bytes wait between the two, so a
//! download of any size holds about a megabyte; a writer whose client went away gets
//! `BrokenPipe` on its next chunk and stops. A writer that fails midway ends the body
//! with an error: the connection is cut, so a client never takes a truncated file for a
//! whole one (with the `Content-Length` of a file, or the missing last chunk of a
//! chunked answer).

use std::io::{self, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use tokio::sync::mpsc;

/// Bytes in one chunk of the body.
pub const BODY_CHUNK: usize = 64 * 1024;
/// Chunks queued between the writer and the connection.
pub const BODY_QUEUE: usize = 16;

/// The writing end of a streamed body (blocking: never use it on an async task).
#[derive(Debug)]
pub struct BodyWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

/// The sending end: a `Stream` of chunks for [`axum::body::Body::from_stream`].
#[derive(Debug)]
pub struct BodyStream(mpsc::Receiver<io::Result<Bytes>>);

/// A new body: write into the first, answer with the second.
#[must_use]
pub fn body_channel() -> (BodyWriter, BodyStream) {
    let (tx, rx) = mpsc::channel(BODY_QUEUE);
    (
        BodyWriter {
            tx,
            buf: Vec::with_capacity(BODY_CHUNK),
        },
        BodyStream(rx),
    )
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the client went away")
}

impl BodyWriter {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(BODY_CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| gone())
    }

    /// Sends what is buffered: the body is complete.
    pub fn finish(mut self) -> io::Result<()> {
        self.send_buffered()
    }

    /// Ends the body with an error (the connection is cut); what is buffered is dropped.
    pub fn fail(self, why: impl std::fmt::Display) {
        tracing::warn!("streamed body failed: {why}");
        // Nobody listening is no error of ours.
        let _ = self
            .tx
            .blocking_send(Err(io::Error::other(why.to_string())));
    }
}

impl Write for BodyWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.tx.is_closed() {
            return Err(gone());
        }
        let room = BODY_CHUNK - self.buf.len();
        let n = b.len().min(room);
        self.buf.extend_from_slice(&b[..n]);
        if self.buf.len() >= BODY_CHUNK {
            self.send_buffered()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

impl futures_core::Stream for BodyStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

impl BodyStream {
    /// The body axum sends.
    pub fn into_body(self) -> axum::body::Body {
        axum::body::Body::from_stream(self)
    }
}

/// `Content-Disposition: attachment` for a file name from a guest: a plain-ASCII
/// `filename` (anything else becomes `_`) and the exact name as RFC 5987 `filename*`.
///
/// ```
/// use vinfra_host::api::content_disposition;
/// assert_eq!(content_disposition("hosts"),
///     "attachment; filename=\"hosts\"; filename*=UTF-8''hosts");
/// assert_eq!(content_disposition("a \"b\".txt"),
///     "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt");
/// ```
#[must_use]
pub fn content_disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_arrive_in_order_and_a_failure_ends_the_stream() {
        let (mut w, mut s) = body_channel();
        let writer = std::thread::spawn(move || {
            w.write_all(&vec![7u8; BODY_CHUNK + 10]).unwrap();
            w.finish().unwrap();
        });
        let mut got = Vec::new();
        while let Some(chunk) = s.0.blocking_recv() {
            got.extend_from_slice(&chunk.unwrap());
        }
        writer.join().unwrap();
        assert_eq!(got.len(), BODY_CHUNK + 10);

        let (w, mut s) = body_channel();
        std::thread::spawn(move || w.fail("damaged"))
            .join()
            .unwrap();
        assert!(s.0.blocking_recv().unwrap().is_err());
    }

    #[test]
    fn a_writer_stops_when_nobody_reads() {
        let (mut w, s) = body_channel();
        drop(s);
        let e = w.write_all(&vec![0u8; BODY_CHUNK]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }
}
