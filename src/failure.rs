//! The one failure type the protocol machines know: an effect they asked
//! for (store a message, remove messages, make a copy) failed, for now or
//! for good. What failed underneath (a store error, say) is the service's
//! business; it maps its errors here (`store::StoreError` by
//! [`StoreError::is_permanent`](crate::store::StoreError::is_permanent)),
//! and the machine turns the kind into its protocol's reply (SMTP's 4xx or
//! 5xx, POP3's `[SYS/TEMP]` or `[SYS/PERM]`).

use std::fmt;

/// A failed effect, with the text the log shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Trying again later may work (a full disk, a lock held).
    Temporary(String),
    /// Trying again cannot help (the mailbox is gone).
    Permanent(String),
}

impl Failure {
    /// Whether retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Failure::Permanent(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Temporary(why) | Failure::Permanent(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Failure {}
