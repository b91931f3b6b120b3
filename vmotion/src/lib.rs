//! vinfra-vmotion: live migration of a running VM by memory pre-copy.
//!
//! The source copies guest memory while the VM runs, resends what the guest dirtied
//! round after round, pauses the VM when the rest fits the downtime target, sends the
//! last pages and the vCPU and device state, hands the disks' exclusive locks over, and
//! commits; the destination resumes the VM only then. Any failure before `Commit` leaves
//! the VM running on the source. The crate knows no VMM: [`MigratableVm`] and
//! [`IncomingVm`] are what it needs from one (vmm-core's `Vm` implements them behind the
//! `vmm-core` feature). The protocol, byte by byte, and the failure model are in the
//! README.
//!
//! - [`wire`]: the hello, the frame and every message, with a bounds-checked decoder.
//! - [`seal`]: keys, AEAD (AES-256-GCM) or crc32 framing, sequence numbers.
//! - [`source`], [`destination`]: the sans-IO state machines.
//! - [`precopy`]: bandwidth, dirty rate, when to stop, auto-converge, the bandwidth cap.
//! - [`migrate`], [`receive`]: the drivers over a stream.
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

pub mod destination;
mod error;
#[cfg(feature = "test-utils")]
pub mod fake;
pub mod layout;
mod link;
mod options;
pub mod precopy;
mod run;
pub mod seal;
pub mod source;
mod vm;
#[cfg(feature = "vmm-core")]
pub mod vmm_core;
pub mod wire;

pub use destination::ReceiveStats;
pub use error::{Error, Result, Side};
pub use layout::{Layout, PageSet};
pub use options::{MigrationOptions, MigrationStats, Progress, ReceiveOptions, Security, Stage};
pub use run::{migrate, receive, Connection};
pub use seal::ClusterKey;
pub use vm::{DiskHandover, IncomingVm, MigratableVm, VmError, VmErrorKind, VmOp};
