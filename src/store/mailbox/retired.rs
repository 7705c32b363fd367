//! A reset mailbox's past: the key files retired by each reset, and the
//! messages sealed to them, moved aside where POP3 does not list them until
//! `mailbox export --retired` takes them and `purge-retired` removes them.

use super::*;

impl Mailbox {
    /// Installs a new key pair. The old key file is kept under
    /// `retired-keys/<stamp>.json`, and the messages sealed to the old key
    /// are moved aside into `retired/<stamp>/messages/`, where POP3 does not
    /// list them (they would fail as damaged on every archiver run). Holds
    /// the mailbox lock (no POP3 session meanwhile) and the keys lock (a
    /// delivery sealed to the old key and finishing later joins them).
    /// Returns how many messages were moved aside.
    pub fn reset_keys(
        &mut self,
        public: PublicKey,
        wrapped: &WrappedKey,
    ) -> Result<usize, StoreError> {
        let _session = self.try_lock()?;
        let keys_path = self.dir.join(KEYS_LOCK);
        let keys =
            durable::open_lock_file(&keys_path).map_err(io_error(&keys_path, "cannot open"))?;
        keys.lock().map_err(io_error(&keys_path, "cannot lock"))?;
        let retired = self.dir.join(RETIRED_DIR);
        durable::create_private_dir(&retired)
            .map_err(io_error(&retired, "cannot create directory"))?;
        let old = self.dir.join(KEY_FILE);
        let stamp = timestamp::unix_micros(SystemTime::now());
        fs::copy(&old, retired.join(format!("{stamp}.json")))
            .map_err(io_error(&old, "cannot retire"))?;
        durable::sync_dir(&retired).map_err(io_error(&retired, "cannot sync"))?;
        let aside = self.dir.join(RETIRED_MESSAGES_DIR).join(stamp.to_string());
        let aside_messages = aside.join(MESSAGES_DIR);
        for dir in [
            self.dir.join(RETIRED_MESSAGES_DIR),
            aside.clone(),
            aside_messages.clone(),
        ] {
            durable::create_private_dir(&dir).map_err(io_error(&dir, "cannot create directory"))?;
        }
        let old_public = crypto::base64_encode(self.info.public_key.as_bytes());
        durable::replace_file(
            &aside,
            RETIRED_PUBLIC_KEY,
            format!("{old_public}\n").as_bytes(),
        )
        .map_err(io_error(&aside.join(RETIRED_PUBLIC_KEY), "cannot write"))?;
        let messages = self.dir.join(MESSAGES_DIR);
        let names = self.message_names()?;
        for name in &names {
            let file = name.file_name();
            fs::rename(messages.join(&file), aside_messages.join(&file))
                .map_err(io_error(&messages.join(&file), "cannot move aside"))?;
        }
        // Those files are no longer handed over by POP3: removed by the
        // administrator, as far as custody goes.
        let moved: Vec<String> = names.iter().map(MessageName::file_name).collect();
        let mut entries = removed_entries(&moved, "moved aside by a password reset");
        entries.push((custody::Event::MailboxReset, None, None));
        self.record_admin(&entries)?;
        // Moved aside durably before the new key makes them unreadable.
        for dir in [
            &aside_messages,
            &self.dir.join(RETIRED_MESSAGES_DIR),
            &messages,
        ] {
            durable::sync_dir(dir).map_err(io_error(dir, "cannot sync"))?;
        }
        self.write_key_file(wrapped)?;
        let info = MailboxInfo {
            public_key: public,
            ..self.info.clone()
        };
        self.replace_info(info)?;
        Ok(names.len())
    }

    /// The directories of messages sealed to retired keys, oldest first:
    /// (the retired public key, the directory holding the message files).
    pub(super) fn retired_sets(&self) -> Result<Vec<(Option<PublicKey>, PathBuf)>, StoreError> {
        Mailbox::retired_sets_of(&self.dir)
    }

    pub(super) fn retired_sets_of(
        mailbox_dir: &Path,
    ) -> Result<Vec<(Option<PublicKey>, PathBuf)>, StoreError> {
        let dir = mailbox_dir.join(RETIRED_MESSAGES_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir, "cannot list")(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&dir, "cannot list"))?;
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let key = beneath::read_regular(&entry.path().join(RETIRED_PUBLIC_KEY), MAX_SMALL_FILE)
                .ok()
                .and_then(|text| {
                    crypto::base64_decode_exact::<32>(String::from_utf8_lossy(&text).trim()).ok()
                })
                .and_then(|bytes| PublicKey::from_bytes(&bytes).ok());
            out.push((key, entry.path().join(MESSAGES_DIR)));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Messages sealed to retired keys: (message directory, file name), oldest set first.
    pub fn retired_messages(&self) -> Result<Vec<(PathBuf, MessageName)>, StoreError> {
        let mut out = Vec::new();
        for (_, dir) in self.retired_sets()? {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(&dir, "cannot list")(e)),
            };
            let mut names: Vec<MessageName> = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io_error(&dir, "cannot list"))?;
                if entry.file_type().is_ok_and(|t| t.is_file())
                    && let Some(name) = entry
                        .file_name()
                        .to_str()
                        .and_then(MessageName::from_file_name)
                {
                    names.push(name);
                }
            }
            names.sort();
            out.extend(names.into_iter().map(|n| (dir.clone(), n)));
        }
        Ok(out)
    }

    /// Removes every message sealed to a retired key (the retired key files
    /// stay); returns how many went. The administrator's explicit purge.
    pub fn purge_retired(&self) -> Result<usize, StoreError> {
        let retired = self.retired_messages()?;
        let count = retired.len();
        let names: Vec<String> = retired.iter().map(|(_, n)| n.file_name()).collect();
        let entries = removed_entries(&names, "purged");
        if !entries.is_empty() {
            self.record_admin(&entries)?;
        }
        let dir = self.dir.join(RETIRED_MESSAGES_DIR);
        match fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&dir, "cannot remove")(e)),
        }
        durable::sync_dir(&self.dir).map_err(io_error(&self.dir, "cannot sync"))?;
        Ok(count)
    }

    /// Opens a message sealed to a retired key.
    pub fn open_retired_message(
        &self,
        dir: &Path,
        name: &MessageName,
        pair: &KeyPair,
    ) -> Result<MessageReader<File>, StoreError> {
        let path = dir.join(name.file_name());
        let file = beneath::open_regular(&path).map_err(io_error(&path, "cannot open"))?;
        MessageReader::open(file, pair).map_err(|e| message_error(&path, e))
    }

    /// The key pairs of the retired key files that `password` unwraps.
    pub fn unlock_retired(&self, password: &Password) -> Result<Vec<KeyPair>, StoreError> {
        let dir = self.dir.join(RETIRED_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir, "cannot list")(e)),
        };
        let sets = self.retired_sets()?;
        let mut pairs = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_error(&dir, "cannot list"))?.path();
            let Ok(wrapped) = read_key_file(&path) else {
                continue;
            };
            // The public key is what the set moved aside with it recorded.
            for (public, _) in &sets {
                let Some(public) = public else { continue };
                if let Ok(pair) = crypto::unwrap_secret_key(&wrapped, password, public) {
                    pairs.push(pair);
                    break;
                }
            }
        }
        Ok(pairs)
    }
}
