//! The POP3 server's [`Backend`] over the store: logins unwrap the mailbox
//! key (throttled, capped, constant-time for unknown mailboxes), and the
//! maildrop serves and deletes the messages of the snapshot taken at login.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::sync::Arc;

use log::{info, warn};
use zeroize::Zeroizing;

use super::server::{Backend, Listing, LoginError, Maildrop, MessageError};
use crate::auth::{KdfSlots, LoginThrottle};
use crate::crypto::{self, KdfParams, KeyPair, Password};
use crate::failure::Failure;
use crate::store::mailbox::message_error;
use crate::store::message::MessageReader;
use crate::store::{Mailbox, MailboxId, MailboxLock, MessageName, Store, StoreError, custody};

/// Shared by every POP3 login.
pub struct LoginContext {
    /// The store.
    pub store: Store,
    /// `mailbox_domain`: a login name may carry it.
    pub mailbox_domain: String,
    /// Failure delays and lockouts.
    pub throttle: Arc<LoginThrottle>,
    /// The cap on concurrent key derivations.
    pub kdf_slots: Arc<KdfSlots>,
    /// Cost of the stand-in derivation for unknown mailboxes.
    pub kdf: KdfParams,
}

/// The login name as a mailbox id: `mbx-…` or `mbx-…@<mailbox_domain>`.
pub fn mailbox_of(login: &str, mailbox_domain: &str) -> Option<MailboxId> {
    let local = match login.rsplit_once('@') {
        Some((local, domain)) if domain.eq_ignore_ascii_case(mailbox_domain) => local,
        Some(_) => return None,
        None => login,
    };
    local.parse().ok()
}

/// Logs a client in through [`LoginContext`].
pub struct StoreLogin {
    context: Arc<LoginContext>,
    client: IpAddr,
}

impl StoreLogin {
    /// Logins of a client at `client`.
    pub fn new(context: Arc<LoginContext>, client: IpAddr) -> StoreLogin {
        StoreLogin { context, client }
    }
}

impl Backend for StoreLogin {
    type Maildrop = StoreMaildrop;

    fn login(&mut self, user: &str, password: Password) -> Result<StoreMaildrop, LoginError> {
        let ctx = &self.context;
        let id = mailbox_of(user, &ctx.mailbox_domain);
        let attempt = match ctx.throttle.begin(self.client, id.as_ref()) {
            Ok(attempt) => attempt,
            Err(why) => {
                warn!(
                    "pop3 {}: login for {user:?} refused: locked out ({why:?})",
                    self.client
                );
                return Err(LoginError::LockedOut);
            }
        };
        let mailbox = match id.as_ref().map(|id| ctx.store.mailbox(id)) {
            Some(Ok(mailbox)) => Some(mailbox),
            None | Some(Err(StoreError::NotFound(_))) => None,
            Some(Err(e)) => {
                warn!("pop3 {}: cannot open mailbox {user:?}: {e}", self.client);
                return Err(LoginError::Unavailable);
            }
        };
        // An unknown mailbox costs the same derivation as a real one, so the
        // answer's timing does not tell whether the mailbox exists.
        let unlocked = ctx.kdf_slots.run(|| match &mailbox {
            Some(m) => m.unlock(&password).map(Some),
            None => {
                crypto::burn_key_derivation(&password, ctx.kdf);
                Ok(None)
            }
        });
        drop(password);
        let (mailbox, pair) = match (mailbox, unlocked) {
            (Some(mailbox), Ok(Some(pair))) => (mailbox, pair),
            (_, Err(StoreError::PublicOnly(id))) => {
                info!(
                    "pop3 {}: login for {id} refused: a standby copy, public key only",
                    self.client
                );
                return Err(LoginError::Failed(attempt.failed()));
            }
            (_, Ok(_)) | (_, Err(StoreError::WrongPassword(_))) => {
                info!("pop3 {}: failed login for {user:?}", self.client);
                return Err(LoginError::Failed(attempt.failed()));
            }
            (_, Err(e)) => {
                warn!("pop3 {}: cannot unlock {user:?}: {e}", self.client);
                return Err(LoginError::Unavailable);
            }
        };
        attempt.succeeded();
        let lock = match mailbox.try_lock() {
            Ok(lock) => lock,
            Err(StoreError::InUse(_)) => {
                info!(
                    "pop3 {}: login for {} refused: [IN-USE], another session holds it",
                    self.client,
                    mailbox.id()
                );
                return Err(LoginError::InUse);
            }
            Err(e) => {
                warn!("pop3 {}: cannot lock {}: {e}", self.client, mailbox.id());
                return Err(LoginError::Unavailable);
            }
        };
        let maildrop = StoreMaildrop::snapshot(mailbox, pair, lock).map_err(|e| {
            warn!("pop3 {}: cannot list mailbox: {e}", self.client);
            LoginError::Unavailable
        })?;
        if let Err(e) = maildrop.mailbox.mark_retrieved() {
            warn!("pop3 {}: {e}", self.client);
        }
        let listing = maildrop.listing();
        info!(
            "pop3 {}: {} logged in, {} message(s), {} bytes (custody session {})",
            self.client,
            maildrop.mailbox.id(),
            listing.len(),
            listing.iter().map(|l| l.size).sum::<u64>(),
            maildrop.session
        );
        Ok(maildrop)
    }
}

/// Messages up to this size are decrypted once into memory for RETR; larger
/// ones are decrypted twice (check, then send) to keep memory flat.
const IN_MEMORY_BYTES: u64 = 4 * 1024 * 1024;

/// A logged-in mailbox. The secret key is zeroized when this is dropped.
pub struct StoreMaildrop {
    mailbox: Mailbox,
    pair: KeyPair,
    names: Vec<MessageName>,
    listing: Vec<Listing>,
    /// Sent whole by RETR in this session.
    retrieved: Vec<bool>,
    /// This session's id in the custody log.
    session: String,
    _lock: MailboxLock,
}

impl StoreMaildrop {
    /// The messages present now; later arrivals show in the next session.
    fn snapshot(
        mailbox: Mailbox,
        pair: KeyPair,
        lock: MailboxLock,
    ) -> Result<StoreMaildrop, StoreError> {
        let names = mailbox.message_names()?;
        let mut listing = Vec::with_capacity(names.len());
        for name in &names {
            // Newer file names carry the size; an older file is opened for
            // the size in its metadata record. One whose metadata cannot be
            // read is listed with its file size and refused at RETR.
            let size = match name.size() {
                Some(size) => size,
                None => match mailbox.open_message(name, &pair) {
                    Ok(reader) => reader.metadata().size,
                    Err(e) => {
                        warn!("pop3 {}: {e}", mailbox.id());
                        mailbox.message_file_size(name).unwrap_or(0)
                    }
                },
            };
            listing.push(Listing {
                uidl: name.to_string(),
                size,
            });
        }
        Ok(StoreMaildrop {
            mailbox,
            pair,
            retrieved: vec![false; names.len()],
            names,
            listing,
            session: crypto::random_hex(8),
            _lock: lock,
        })
    }

    fn reader(&self, index: usize) -> Result<MessageReader<File>, StoreError> {
        self.mailbox.open_message(&self.names[index], &self.pair)
    }

    /// Decrypts message `index` into `out`, checking every record and the size.
    fn check(&self, index: usize, out: &mut impl Write) -> Result<(), StoreError> {
        let expected = self.listing[index].size;
        let path = self.mailbox.message_path(&self.names[index]);
        let mut reader = self.reader(index)?;
        let recorded = reader.metadata().size;
        // One byte past the expected size is enough to tell it is too long, and
        // keeps an in-memory buffer from growing (and leaving copies behind).
        let reason = match io::copy(&mut (&mut reader).take(expected + 1), out) {
            Err(e) => return Err(message_error(&path, e)),
            Ok(_) if recorded != expected => {
                format!("its metadata says {recorded} bytes, its name {expected}")
            }
            Ok(n) if n != expected => {
                let what = if n > expected { "more" } else { "fewer" };
                format!("it holds {what} than the {expected} bytes its metadata says")
            }
            Ok(_) => return Ok(()),
        };
        Err(StoreError::Damaged { path, reason })
    }

    fn classify(&self, e: StoreError) -> MessageError {
        warn!("pop3 {}: {e}", self.mailbox.id());
        match e {
            StoreError::Damaged { .. } => MessageError::Damaged,
            _ => MessageError::Unavailable,
        }
    }
}

impl Maildrop for StoreMaildrop {
    fn listing(&self) -> &[Listing] {
        &self.listing
    }

    fn open(&mut self, index: usize) -> Result<Box<dyn Read>, MessageError> {
        // A small message is decrypted once, into memory (wiped when sent);
        // a large one is read twice, to check and then to send, so memory
        // stays flat whatever its size.
        let size = self.listing[index].size;
        let result = if size <= IN_MEMORY_BYTES {
            let mut body = Zeroizing::new(Vec::with_capacity(size as usize + 1));
            self.check(index, &mut *body)
                .map(|()| Box::new(io::Cursor::new(body)) as Box<dyn Read>)
        } else {
            self.check(index, &mut io::sink())
                .and_then(|()| self.reader(index))
                .map(|reader| Box::new(reader) as Box<dyn Read>)
        };
        result.map_err(|e| self.classify(e))
    }

    fn delete(&mut self, indexes: &[usize]) -> Result<(), Failure> {
        let names: Vec<(MessageName, bool)> = indexes
            .iter()
            .map(|&i| (self.names[i].clone(), self.retrieved[i]))
            .collect();
        self.mailbox
            .remove_messages(&names, &self.session)
            .map_err(Failure::from)?;
        if !names.is_empty() {
            info!(
                "pop3 {}: deleted {} message(s)",
                self.mailbox.id(),
                names.len()
            );
        }
        Ok(())
    }

    fn retrieved(&mut self, index: usize) {
        self.retrieved[index] = true;
        let entry = custody::Entry::new(custody::Event::Retrieved)
            .message(self.mailbox.id().as_str(), &self.names[index].file_name());
        let entry = custody::Entry {
            session: Some(self.session.clone()),
            ..entry
        };
        if let Err(e) = custody::append(self.mailbox.root(), entry) {
            warn!("pop3 {}: {e}", self.mailbox.id());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_are_the_id_with_or_without_the_mailbox_domain() {
        let id = "mbx-0123456789abcdef0123456789abcdef";
        assert_eq!(mailbox_of(id, "archive.example").unwrap().as_str(), id);
        assert_eq!(
            mailbox_of(&format!("{id}@Archive.Example"), "archive.example")
                .unwrap()
                .as_str(),
            id
        );
        assert_eq!(
            mailbox_of(&format!("{id}@elsewhere.example"), "archive.example"),
            None
        );
        assert_eq!(mailbox_of("journal", "archive.example"), None);
        assert_eq!(mailbox_of("../etc/passwd", "archive.example"), None);
    }
}
