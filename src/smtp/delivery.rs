//! The journal receiver's [`Backend`]: recipients are mailboxes of the
//! store, messages go through the spool into every recipient mailbox.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::SystemTime;

use log::warn;

use super::command::Path;
use super::server::{Backend, Envelope, MessageSink, RecipientCheck};
use crate::failure::Failure;
use crate::store::reserve::DiskReserve;
use crate::store::{Mailbox, MailboxId, Metadata, Source, SpoolWriter, Status, Store, StoreError};
use crate::timestamp;

/// Looks recipients up in the store and delivers into it.
pub struct StoreBackend {
    store: Store,
    mailbox_domain: String,
    /// The mailboxes RCPT accepted, read once and handed to the message, so
    /// a transaction reads each `mailbox.json` once.
    accepted: HashMap<MailboxId, Mailbox>,
    reserve: Arc<DiskReserve>,
    /// `limits.max_pending_bytes_per_mailbox` (0: none).
    pub max_pending_bytes: u64,
}

impl StoreBackend {
    /// Recipients must be `<mailbox id>@<mailbox_domain>`.
    pub fn new(store: Store, mailbox_domain: &str, reserve: Arc<DiskReserve>) -> StoreBackend {
        StoreBackend {
            store,
            mailbox_domain: mailbox_domain.to_string(),
            accepted: HashMap::new(),
            reserve,
            max_pending_bytes: 0,
        }
    }
}

impl Backend for StoreBackend {
    fn recipient(&mut self, address: &Path) -> RecipientCheck {
        let Some((local, domain)) = address.split() else {
            return RecipientCheck::NotLocal;
        };
        if !domain.eq_ignore_ascii_case(&self.mailbox_domain) {
            return RecipientCheck::NotLocal;
        }
        let Ok(id) = local.parse::<MailboxId>() else {
            return RecipientCheck::Unknown;
        };
        match self.store.mailbox(&id) {
            // Counted only when a limit is set: it reads the directory.
            Ok(m)
                if m.info().status == Status::Active
                    && self.max_pending_bytes > 0
                    && m.stats().is_ok_and(|s| s.bytes >= self.max_pending_bytes) =>
            {
                RecipientCheck::Full
            }
            Ok(m) if m.info().status == Status::Active => {
                self.accepted.insert(id.clone(), m);
                RecipientCheck::Accept(id)
            }
            Ok(m) => {
                // A journal rule still points at it: `status` says so.
                m.note_refused_delivery();
                RecipientCheck::Suspended
            }
            Err(StoreError::NotFound(_)) => RecipientCheck::Unknown,
            Err(e) => {
                warn!("recipient lookup for {id} failed: {e}");
                RecipientCheck::Unavailable
            }
        }
    }

    fn below_reserve(&mut self) -> bool {
        self.reserve.below().is_some()
    }

    fn start_message(&mut self) -> Result<Box<dyn MessageSink>, Failure> {
        let spool = self.store.spool()?;
        Ok(Box::new(StoreSink {
            spool,
            store: self.store.clone(),
            accepted: std::mem::take(&mut self.accepted),
        }))
    }
}

struct StoreSink {
    spool: SpoolWriter,
    store: Store,
    accepted: HashMap<MailboxId, Mailbox>,
}

impl Write for StoreSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.spool.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spool.flush()
    }
}

/// The mailbox RCPT accepted, if it still exists (a directory check, not
/// another read of `mailbox.json`).
fn lookup(
    store: &Store,
    accepted: &mut HashMap<MailboxId, Mailbox>,
    id: &MailboxId,
) -> Result<Mailbox, StoreError> {
    match accepted.remove(id) {
        Some(mailbox) if mailbox.dir().is_dir() => Ok(mailbox),
        Some(_) => Err(StoreError::NotFound(id.clone())),
        None => store.mailbox(id),
    }
}

impl MessageSink for StoreSink {
    fn deliver(self: Box<Self>, envelope: &Envelope) -> Result<Vec<(MailboxId, String)>, Failure> {
        self.store_copies(envelope).map_err(Failure::from)
    }
}

impl StoreSink {
    /// One sealed copy per recipient mailbox, committed together.
    fn store_copies(
        self: Box<Self>,
        envelope: &Envelope,
    ) -> Result<Vec<(MailboxId, String)>, StoreError> {
        let StoreSink {
            spool,
            store,
            mut accepted,
        } = *self;
        let spool = spool.finish()?;
        // One copy per mailbox, listing only that mailbox's recipient
        // addresses: a copy never reveals the other mailboxes of the message.
        let mut copies: Vec<(Mailbox, Vec<String>)> = Vec::new();
        let mut gone = None;
        for (id, address) in &envelope.recipients {
            match copies.iter_mut().find(|(m, _)| m.id() == id) {
                Some((_, addresses)) => addresses.push(address.clone()),
                None => match lookup(&store, &mut accepted, id) {
                    Ok(mailbox) => copies.push((mailbox, vec![address.clone()])),
                    // Deleted since RCPT: the others still get their copy.
                    Err(e @ StoreError::NotFound(_)) => {
                        warn!("smtp[{}] {e}; not delivered there", envelope.queue_id);
                        gone = Some(e);
                    }
                    Err(e) => return Err(e),
                },
            }
        }
        if let (true, Some(e)) = (copies.is_empty(), gone) {
            return Err(e);
        }
        let received = timestamp::rfc3339(SystemTime::now());
        let copies: Vec<(&Mailbox, Metadata)> = copies
            .iter()
            .map(|(mailbox, addresses)| {
                let metadata = Metadata {
                    received: received.clone(),
                    source: Source::Smtp,
                    mail_from: envelope.mail_from.clone(),
                    rcpt_to: addresses.clone(),
                    client_ip: Some(envelope.client_ip.to_string()),
                    tls: envelope.tls.clone(),
                    size: spool.size(),
                    upstream: None,
                };
                (mailbox, metadata)
            })
            .collect();
        let names = store.deliver(&spool, &copies)?;
        for _ in &names {
            crate::metrics::stored("journal", spool.size());
        }
        Ok(copies
            .iter()
            .zip(names)
            .map(|((mailbox, _), name)| (mailbox.id().clone(), name.to_string()))
            .collect())
    }
}
