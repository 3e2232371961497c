//! A transfer's id, as the API, events, errors and the control API name it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A transfer's id: a number unique within one node's database (it keeps
/// counting across restarts).
///
/// ```
/// let id: blixard_node::TransferId = "42".parse()?;
/// assert_eq!(id.to_string(), "42");
/// # Ok::<(), blixard_node::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TransferId(pub u64);

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for TransferId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        s.parse().map(TransferId).map_err(|_| Error::InvalidArgument(format!("transfer id {s:?}: expected a number")))
    }
}
