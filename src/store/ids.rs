//! Names that become paths: they can only hold what their parser accepts, so no
//! path is ever built from unchecked input.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use crate::crypto;
use crate::timestamp;

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A mailbox id: `mbx-` followed by 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(String);

impl MailboxId {
    /// A fresh random id (128 bits).
    pub fn generate() -> MailboxId {
        MailboxId(format!("mbx-{}", crypto::random_hex(16)))
    }

    /// The id text, also its directory name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for MailboxId {
    type Err = String;

    /// Accepts the id in any letter case (addresses are case-insensitive) and
    /// stores it in lowercase.
    fn from_str(text: &str) -> Result<MailboxId, String> {
        let lower = text.to_ascii_lowercase();
        match lower.strip_prefix("mbx-") {
            Some(rest) if rest.len() == 32 && is_lower_hex(rest) => Ok(MailboxId(lower)),
            _ => Err(format!(
                "{text:?} is not a mailbox id (expected mbx- followed by 32 hex digits)"
            )),
        }
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored message: its id `<unix_micros>-<16 hex>` (the POP3 UIDL) and,
/// for files written since the size went into the name, the exact message
/// size. The file is `<id>,S=<size>.msg` (as Maildir's `,S=`), or `<id>.msg`
/// for older files, whose size is only in their encrypted metadata. The file
/// length already tells the size to within a few bytes, so the name reveals
/// nothing new; it spares a login from opening every message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageName {
    id: String,
    size: Option<u64>,
}

impl MessageName {
    /// A fresh name for a message of `size` bytes stored now.
    pub fn generate(now: SystemTime, size: u64) -> MessageName {
        // Zero-padded so that names sort in time order as plain strings.
        MessageName {
            id: format!(
                "{:016}-{}",
                timestamp::unix_micros(now),
                crypto::random_hex(8)
            ),
            size: Some(size),
        }
    }

    /// Parses a file name ending in `.msg`, with or without `,S=<size>`.
    pub fn from_file_name(name: &str) -> Option<MessageName> {
        let stem = name.strip_suffix(".msg")?;
        let (id, size) = match stem.split_once(",S=") {
            Some((id, size)) => {
                let canonical = !size.is_empty()
                    && size.bytes().all(|b| b.is_ascii_digit())
                    && (size == "0" || !size.starts_with('0'));
                (id, Some(size.parse().ok().filter(|_| canonical)?))
            }
            None => (stem, None),
        };
        let mut parsed: MessageName = id.parse().ok()?;
        parsed.size = size;
        Some(parsed)
    }

    /// The file name, with `.msg`.
    pub fn file_name(&self) -> String {
        match self.size {
            Some(size) => format!("{},S={size}.msg", self.id),
            None => format!("{}.msg", self.id),
        }
    }

    /// The UIDL text: the id without the size.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The message size the file name records, if it records one.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// When the message was stored, from the name.
    pub fn stored_at(&self) -> SystemTime {
        let micros = self
            .id
            .split('-')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        timestamp::from_unix_micros(micros)
    }
}

impl FromStr for MessageName {
    type Err = String;

    /// Parses an id (no size).
    fn from_str(text: &str) -> Result<MessageName, String> {
        let valid = match text.split_once('-') {
            Some((micros, random)) => {
                !micros.is_empty()
                    && micros.len() <= 20
                    && micros.bytes().all(|b| b.is_ascii_digit())
                    && random.len() == 16
                    && is_lower_hex(random)
            }
            None => false,
        };
        if valid {
            Ok(MessageName {
                id: text.to_string(),
                size: None,
            })
        } else {
            Err(format!("{text:?} is not a message name"))
        }
    }
}

impl fmt::Display for MessageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailbox_ids_are_mbx_and_32_lowercase_hex() {
        let id = MailboxId::generate();
        assert!(id.as_str().starts_with("mbx-"));
        assert_eq!(id.as_str().len(), 36);
        assert_eq!(id.as_str().parse::<MailboxId>().unwrap(), id);
        assert_ne!(MailboxId::generate(), id);
    }

    #[test]
    fn mailbox_ids_parse_case_insensitively_to_lowercase() {
        let id: MailboxId = "MBX-0123456789ABCDEF0123456789abcdef".parse().unwrap();
        assert_eq!(id.as_str(), "mbx-0123456789abcdef0123456789abcdef");
    }

    #[test]
    fn anything_else_is_not_a_mailbox_id() {
        for bad in [
            "../etc",
            "mbx-",
            "mbx-0123456789abcdef0123456789abcde",
            "mbx-0123456789abcdef0123456789abcdef0",
            "mbx-0123456789abcdef0123456789abcdeg",
            "mbx-0123456789abcdef/123456789abcdef",
            "box-0123456789abcdef0123456789abcdef",
            "",
        ] {
            assert!(bad.parse::<MailboxId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn message_names_sort_in_time_order_and_parse_back() {
        let early = MessageName::generate(timestamp::from_unix_micros(999), 5);
        let late = MessageName::generate(timestamp::from_unix_micros(1_000_000_000_000_000), 0);
        assert!(early < late);
        assert_eq!(
            MessageName::from_file_name(&late.file_name()),
            Some(late.clone())
        );
        assert_eq!(
            timestamp::unix_micros(late.stored_at()),
            1_000_000_000_000_000
        );
        assert_eq!(early.size(), Some(5));
        assert!(early.file_name().ends_with(",S=5.msg"));
        assert!(!early.as_str().contains(','));
    }

    #[test]
    fn names_without_a_size_are_older_files_and_still_read() {
        let old = MessageName::from_file_name("1-0123456789abcdef.msg").unwrap();
        assert_eq!(old.size(), None);
        assert_eq!(old.as_str(), "1-0123456789abcdef");
        assert_eq!(old.file_name(), "1-0123456789abcdef.msg");
        let new = MessageName::from_file_name("1-0123456789abcdef,S=10240.msg").unwrap();
        assert_eq!(new.size(), Some(10240));
        assert_eq!(new.as_str(), old.as_str());
    }

    #[test]
    fn foreign_files_are_not_message_names() {
        for bad in [
            "x.msg",
            "123.msg",
            "123-abc.msg",
            "../1-0123456789abcdef.msg",
            "1-0123456789abcdef.tmp",
            "1-0123456789abcdef,S=.msg",
            "1-0123456789abcdef,S=-1.msg",
            "1-0123456789abcdef,S=012.msg",
            "1-0123456789abcdef,S=1x.msg",
            "1-0123456789abcdef,S=99999999999999999999999.msg",
            "1-0123456789abcdef,S=1,S=1.msg",
        ] {
            assert_eq!(MessageName::from_file_name(bad), None, "{bad}");
        }
    }
}
