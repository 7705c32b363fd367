//! Networking shared by every service: listeners, connections, TLS, limits.

pub mod acceptor;
pub mod cidr;
pub mod conn;
pub mod driver;
pub mod limits;
pub mod line;
pub mod signals;
pub mod tls;
