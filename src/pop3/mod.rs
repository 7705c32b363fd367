//! POP3: the server archivers retrieve mail from.

pub mod command;
pub mod dot_stuffer;
pub mod maildrop;
pub mod server;
pub mod session;
