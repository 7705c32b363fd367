//! Networking shared by every service.

pub mod cidr;
