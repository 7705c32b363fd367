//! The mailbox operations that involve keys, written once for every front
//! end: the `mailbox` CLI and the web console (DESIGN: the console shares
//! mailbox operations with the CLI). Reading passwords, printing and
//! confirmations stay with each front end.

use std::fmt;

use crate::auth;
use crate::crypto::{self, CryptoError, KdfParams, KeyPair, Password};
use crate::store::{Mailbox, MailboxId, Store, StoreError};

/// The password a mailbox is to get.
pub enum NewPassword {
    /// Given by the administrator: checked for strength first.
    Chosen(Password),
    /// Generated here (and returned, to be shown once).
    Generate,
}

/// Why an operation failed.
#[derive(Debug)]
pub enum AdminError {
    /// A chosen password is too weak; the text says why.
    WeakPassword(String),
    /// The store refused or failed.
    Store(StoreError),
    /// Key generation or wrapping failed.
    Crypto(CryptoError),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::WeakPassword(why) => f.write_str(why),
            AdminError::Store(e) => e.fmt(f),
            AdminError::Crypto(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        AdminError::Store(e)
    }
}

impl From<CryptoError> for AdminError {
    fn from(e: CryptoError) -> AdminError {
        AdminError::Crypto(e)
    }
}

/// The password to use, and whether it was generated (to be shown once).
/// `context` are words the password must not be built from (the name).
fn settle(password: NewPassword, context: &[&str]) -> Result<(Password, bool), AdminError> {
    match password {
        NewPassword::Chosen(password) => {
            auth::check_password_strength(&password, context).map_err(AdminError::WeakPassword)?;
            Ok((password, false))
        }
        NewPassword::Generate => Ok((auth::generate_password(), true)),
    }
}

/// Creates a mailbox with a new key pair wrapped under `password`; returns
/// it and the generated password, if one was generated.
pub fn create_mailbox(
    store: &Store,
    kdf: KdfParams,
    name: &str,
    description: &str,
    password: NewPassword,
) -> Result<(Mailbox, Option<Password>), AdminError> {
    let (password, generated) = settle(password, &[name, description])?;
    let pair = KeyPair::generate()?;
    let wrapped = crypto::wrap_secret_key(&pair, &password, kdf)?;
    let mailbox = store.create_mailbox(name, description, pair.public().clone(), &wrapped)?;
    Ok((mailbox, generated.then_some(password)))
}

/// Wraps the same secret key under a new password (no message changes);
/// `old` must unlock it. Returns the generated password, if any.
pub fn change_password(
    store: &Store,
    kdf: KdfParams,
    id: &MailboxId,
    old: &Password,
    new: NewPassword,
) -> Result<Option<Password>, AdminError> {
    let mailbox = store.mailbox(id)?;
    let pair = mailbox.unlock(old)?;
    let info = mailbox.info();
    let (password, generated) = settle(new, &[&info.name, &info.description])?;
    let wrapped = crypto::wrap_secret_key(&pair, &password, kdf)?;
    mailbox.replace_wrapped_key(&wrapped)?;
    Ok(generated.then_some(password))
}

/// For a lost password: a new key pair; the messages stored so far stay
/// sealed to the old key (kept under `retired-keys/`). The caller has had
/// the administrator confirm that. Returns the mailbox and the generated
/// password, if any.
pub fn reset_password(
    store: &Store,
    kdf: KdfParams,
    id: &MailboxId,
    new: NewPassword,
) -> Result<(Mailbox, Option<Password>), AdminError> {
    let mut mailbox = store.mailbox(id)?;
    let info = mailbox.info().clone();
    let (password, generated) = settle(new, &[&info.name, &info.description])?;
    let pair = KeyPair::generate()?;
    let wrapped = crypto::wrap_secret_key(&pair, &password, kdf)?;
    mailbox.reset_keys(pair.public().clone(), &wrapped)?;
    Ok((mailbox, generated.then_some(password)))
}

/// Sets the web console's administrator password, after the same strength
/// check as a chosen mailbox password; stored as an Argon2id hash.
pub fn set_console_password(
    store: &Store,
    kdf: KdfParams,
    password: &Password,
) -> Result<(), AdminError> {
    auth::check_password_strength(password, &["sealpost", "admin", "console"])
        .map_err(AdminError::WeakPassword)?;
    let hash = crypto::hash_password(password, kdf)?;
    store.set_console_password_hash(&hash)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: KdfParams = KdfParams {
        opslimit: 1,
        memlimit: 8 * 1024 * 1024,
    };

    #[test]
    fn a_weak_password_creates_nothing_and_a_changed_one_keeps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let weak = NewPassword::Chosen(Password::new("Journal 2026".into()));
        let refused = create_mailbox(&store, FAST, "Journal", "", weak);
        assert!(matches!(refused, Err(AdminError::WeakPassword(_))));
        assert!(store.mailbox_ids().unwrap().is_empty());

        let (mailbox, generated) =
            create_mailbox(&store, FAST, "Journal", "", NewPassword::Generate).unwrap();
        let first = generated.expect("a generated password is returned");
        let id = mailbox.id().clone();
        let public = mailbox.info().public_key.clone();
        let wrong = Password::new("not the password".into());
        let err = change_password(&store, FAST, &id, &wrong, NewPassword::Generate);
        assert!(matches!(
            err,
            Err(AdminError::Store(StoreError::WrongPassword(_)))
        ));
        let second = change_password(&store, FAST, &id, &first, NewPassword::Generate)
            .unwrap()
            .unwrap();
        let reopened = store.mailbox(&id).unwrap();
        assert_eq!(reopened.info().public_key, public, "the same key pair");
        assert!(reopened.unlock(&second).is_ok());
        assert!(reopened.unlock(&first).is_err());

        let (reset, third) = reset_password(&store, FAST, &id, NewPassword::Generate).unwrap();
        assert_ne!(reset.info().public_key, public, "a new key pair");
        assert!(store.mailbox(&id).unwrap().unlock(&third.unwrap()).is_ok());
    }
}
