//! The dialogs of the TUI (connect, upload, queue with a priority and a
//! limit): what each holds while the user types (keys edit them in
//! `app`).

use blixard_node::{ResourceInfo, TransferPriority};

/// The priorities the picker offers, highest first.
pub const PRIORITIES: [TransferPriority; 4] =
    [TransferPriority::Critical, TransferPriority::High, TransferPriority::Normal, TransferPriority::Low];

/// A dialog waiting for input.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// `c`: a peer address.
    Connect { input: String },
    /// `u`: file, name, version; `focus` is the field being typed.
    Upload { fields: [String; 3], focus: usize },
    /// `q`: a priority (index into [`PRIORITIES`]) and an optional limit
    /// in Mbit/s for the selected resource; `focus` 0 is the picker, 1 the limit.
    Queue { resource: ResourceInfo, priority: usize, limit: String, focus: usize },
}

pub const UPLOAD_FIELDS: [&str; 3] = ["File", "Name", "Version"];
