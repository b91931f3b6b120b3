//! vinfra-vmotion: live migration by memory pre-copy.
//!
//! Built so far: [`wire`], the byte format of the protocol (the hello, the frame, every
//! message) with a bounds-checked decoder that returns a typed [`Error`] on any input.
//! The contract the rest will fulfil is the crate's README.
//!
//! ```
//! use vinfra_vmotion::wire::{
//!     decode_plain_frame, encode_plain_frame, Capabilities, Hello, Message, Role, SecurityMode,
//!     PROTOCOL_VERSION,
//! };
//!
//! let hello = Hello {
//!     version_min: PROTOCOL_VERSION,
//!     version_max: PROTOCOL_VERSION,
//!     role: Role::Source,
//!     security: SecurityMode::Plaintext,
//!     capabilities: Capabilities::AUTO_CONVERGE,
//!     nonce: [7; 32],
//! };
//! let bytes = hello.encode();
//! assert_eq!(Hello::decode(&bytes)?, hello);
//!
//! let frame = encode_plain_frame(0, &Message::Handover { disks: 2 })?;
//! let (header, message) = decode_plain_frame(&frame)?;
//! assert_eq!((header.seq, message), (0, Message::Handover { disks: 2 }));
//!
//! // One flipped bit is caught.
//! let mut bad = frame.clone();
//! bad[16] ^= 1;
//! assert!(decode_plain_frame(&bad).is_err());
//! # Ok::<(), vinfra_vmotion::Error>(())
//! ```
#![forbid(unsafe_code)]

mod error;
pub mod wire;

pub use error::{Error, Result};
