//! RETR and DELE through the proxy: a message not yet archived is copied
//! while it passes to the client, and nothing is deleted upstream without
//! a durable copy.

use super::*;

impl<R: Relay> Pop3Proxy<R> {
    /// Whether message `n` still needs a copy.
    pub(super) fn needs_copy(&mut self, tx: &Tx, n: u64) -> bool {
        if tx.archived_here.contains(&n) {
            return false;
        }
        match &tx.uidls {
            Some(map) => match map.get(&n) {
                Some(uidl) => {
                    let (mailbox, account) = (&tx.account.mailbox, &tx.account);
                    !self.relay.is_archived(mailbox, &account.key(uidl))
                        && !self.relay.is_archived(mailbox, &account.legacy_key(uidl))
                }
                // Not a message number the upstream listed: it will refuse.
                None => false,
            },
            None => true,
        }
    }

    pub(super) fn start_copy(&mut self, mailbox: &MailboxId, number: u64) -> Option<Archiving> {
        match self.relay.start_copy(mailbox) {
            Ok(sink) => Some(Archiving {
                intake: Intake::new(sink, u64::MAX),
                number,
            }),
            Err(e) => {
                warn!("pop3 proxy: cannot start a copy for {mailbox}: {e}");
                None
            }
        }
    }

    /// The size of message `n` when the upstream listed it above the limit.
    pub(super) fn too_big(&self, tx: &Tx, n: u64) -> Option<u64> {
        let size = *tx.sizes.get(&n)?;
        (size > self.max_message_bytes).then_some(size)
    }

    pub(super) fn retr(&mut self, tx: Box<Tx>, n: u64, out: &mut Replies) -> Step {
        if let Some(size) = self.too_big(&tx, n) {
            warn!(
                "pop3 proxy: message {n} is {size} bytes, more than pop3_proxy.max_message_bytes"
            );
            self.state = State::Transaction(tx);
            let limit = self.max_message_bytes;
            return self.error(
                out,
                &format!(
                    "[SYS/PERM] Message {n} is larger than this proxy passes on ({limit} bytes)"
                ),
            );
        }
        let needs_copy = self.needs_copy(&tx, n);
        if needs_copy && self.relay.below_reserve() {
            warn!(
                "pop3 proxy: RETR {n} refused: the disk is below its reserve, so it could not be archived"
            );
            self.state = State::Transaction(tx);
            return self.error(
                out,
                &format!("[SYS/TEMP] Message {n} cannot be archived now (the gateway is short of disk space); try again later"),
            );
        }
        let copy = match needs_copy {
            true => self.start_copy(&tx.account.mailbox.clone(), n),
            false => None,
        };
        self.relay_command(
            tx,
            &format!("RETR {n}"),
            Pending::Multi {
                retr: Some(n),
                copy,
            },
            out,
        )
    }

    /// Nothing is deleted upstream without a durable copy: a message never
    /// archived is retrieved and stored first.
    pub(super) fn dele(&mut self, tx: Box<Tx>, n: u64, out: &mut Replies) -> Step {
        if !self.needs_copy(&tx, n) {
            return self.relay_command(
                tx,
                &format!("DELE {n}"),
                Pending::Line(Answer::Dele(n)),
                out,
            );
        }
        let copy = match self.too_big(&tx, n) {
            Some(size) => Err(format!(
                "it is {size} bytes, more than pop3_proxy.max_message_bytes"
            )),
            None => self
                .start_copy(&tx.account.mailbox.clone(), n)
                .ok_or_else(|| "no copy could be started".to_string()),
        };
        match copy {
            Ok(copy) => self.relay_command(tx, &format!("RETR {n}"), Pending::Archive(copy), out),
            Err(why) => self.not_deleted(tx, n, &why, out),
        }
    }

    pub(super) fn not_deleted(
        &mut self,
        tx: Box<Tx>,
        n: u64,
        why: &str,
        out: &mut Replies,
    ) -> Step {
        warn!("pop3 proxy: message {n} could not be archived, DELE not forwarded: {why}");
        self.state = State::Transaction(tx);
        self.error(
            out,
            &format!("[SYS/TEMP] Message {n} could not be archived, so it was not deleted"),
        )
    }

    pub(super) fn receive_body(
        &mut self,
        tx: Box<Tx>,
        to_client: Option<DotStuffer>,
        copy: Option<Archiving>,
        then_dele: Option<u64>,
        out: &mut Replies,
    ) -> Step {
        let body = Box::new(Body {
            receiver: DataReceiver::normalizing(),
            to_client,
            copy,
            total: 0,
            then_dele,
        });
        // Part of the body may have come with the status line.
        self.body(tx, body, None, out)
    }

    /// More of a multi-line answer (the strict reader finds its end, the
    /// client gets it re-stuffed, the copy gets it as it is).
    pub(super) fn body(
        &mut self,
        mut tx: Box<Tx>,
        mut b: Box<Body>,
        response: Option<Response<'_>>,
        out: &mut Replies,
    ) -> Step {
        let mut plain = Vec::new();
        let end = match tx.link.body(response, &mut b.receiver, &mut plain) {
            Ok(end) => end,
            Err(e) if b.then_dele.is_some() => {
                warn!("pop3 proxy: upstream lost while archiving: {e}");
                return self.lost(&e, out);
            }
            Err(e) => {
                // Mid-response: the client cannot be told more than the close.
                warn!("pop3 proxy: upstream lost in the middle of a response: {e}");
                self.state = State::Closed;
                return Step::Close;
            }
        };
        b.total += plain.len() as u64;
        if b.total > self.max_message_bytes {
            // The upstream announced less (or nothing): stop here, store nothing.
            warn!(
                "pop3 proxy: the upstream sent a response larger than pop3_proxy.max_message_bytes ({} bytes); closing",
                self.max_message_bytes
            );
            self.state = State::Closed;
            return Step::Close;
        }
        if let Some(copy) = &mut b.copy {
            copy.intake.write(&plain);
        }
        if let Some(stuffer) = &mut b.to_client {
            stuffer.push(&plain, out.data());
        }
        if !end {
            let read = tx.link.read();
            self.state = State::Receiving(tx, b);
            return Step::Upstream(read);
        }
        if let Some(stuffer) = &mut b.to_client {
            stuffer.finish(out.data());
        }
        let archived = match b.copy.take() {
            Some(copy) => self.finish_copy(&mut tx, copy),
            None => Ok(()),
        };
        match (b.then_dele, archived) {
            (Some(n), Ok(())) => self.relay_command(
                tx,
                &format!("DELE {n}"),
                Pending::Line(Answer::Dele(n)),
                out,
            ),
            (Some(n), Err(why)) => self.not_deleted(tx, n, &why, out),
            (None, result) => {
                if let Err(e) = result {
                    warn!("pop3 proxy: a copy could not be stored: {e}");
                }
                self.state = State::Transaction(tx);
                Step::Continue
            }
        }
    }

    pub(super) fn finish_copy(&mut self, tx: &mut Tx, copy: Archiving) -> Result<(), String> {
        let size = copy.intake.size();
        let sink = copy.intake.finish().map_err(|e: Refused| e.to_string())?;
        let uidl = tx
            .uidls
            .as_ref()
            .and_then(|m| m.get(&copy.number))
            .cloned()
            .unwrap_or_default();
        let account = &tx.account;
        let facts = CopyFacts {
            mail_from: String::new(),
            rcpt_to: Vec::new(),
            client_ip: self.client_ip,
            tls: self.tls.as_ref().map(|t| t.version.clone()),
            size,
            upstream: Some(Fetched {
                user: account.user.clone(),
                host: account.server.clone(),
                uidl: uidl.clone(),
            }),
        };
        let name = sink
            .prepare(facts)
            .and_then(|prepared| prepared.commit())
            .map_err(|e| e.to_string())?;
        tx.archived_here.insert(copy.number);
        if !uidl.is_empty() {
            self.relay
                .mark_archived(&account.mailbox, &account.key(&uidl))
                .map_err(|e| e.to_string())?;
        }
        info!(
            "pop3 proxy {}: archived message {} ({} bytes) of {} at {} as {name}",
            self.client_ip, copy.number, size, account.user, account.server
        );
        Ok(())
    }
}
