//! Transfers: what a download request is, how a transfer is shown, the
//! table that alone changes transfers, and their records in `node.db`.
//!
//! - [`request`]: [`DownloadRequest`], one type for the library, the
//!   control API and the records.
//! - [`info`]: [`TransferInfo`], [`TransferState`], [`TransferProgress`],
//!   [`TransferFailure`]: plain data for the API and events.
//! - [`id`]: [`TransferId`], a transfer's number.
//! - [`table`]: the table; every state change, metric and event happens
//!   there.
//! - [`record`]: the persisted records and their migrations.

pub mod id;
pub mod info;
pub(crate) mod record;
pub mod request;
pub(crate) mod table;

pub use id::TransferId;
pub use info::{FailureReason, ProviderShare, TransferFailure, TransferInfo, TransferProgress, TransferState};
pub use request::DownloadRequest;
