//! A message through DATA (RFC 5321 section 4.1.1.4) or BDAT (RFC 3030):
//! taken in under its size limit, checked, and handed to the backend, which
//! answers only once every copy is durable.

use super::*;

impl<B: Backend> Journal<B> {
    pub(super) fn start_incoming(
        &mut self,
        tx: &Transaction,
        helo: &Helo,
    ) -> Result<Incoming, Reply> {
        let failed = |e: &dyn std::fmt::Display| {
            warn!("smtp[{}] cannot start storing a message: {e}", tx.queue_id);
            temporary_storage_failure()
        };
        let mut sink = self.backend.start_message().map_err(|e| failed(&e))?;
        let header = self.received_header(tx, helo);
        sink.write_all(header.as_bytes()).map_err(|e| failed(&e))?;
        Ok(Incoming {
            intake: Intake::new(sink, self.settings.max_message_bytes),
            message_id: MessageIdScan::new(),
        })
    }

    pub(super) fn data(&mut self) -> Reply {
        let (helo, tx) = match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Envelope(helo, tx) => (helo, tx),
            other => {
                let reply = match &other {
                    Phase::Greeted => Reply::new(503, "5.5.1", "Send EHLO or HELO first"),
                    Phase::Chunked(_) => Reply::new(
                        503,
                        "5.5.1",
                        "DATA is not allowed after BDAT in the same transaction",
                    ),
                    _ => Reply::new(503, "5.5.1", "Need MAIL command first"),
                };
                self.phase = other;
                return reply;
            }
        };
        if tx.recipients.is_empty() {
            self.phase = Phase::Envelope(helo, tx);
            return Reply::new(554, "5.5.1", "No valid recipients");
        }
        match self.start_incoming(&tx, &helo) {
            Ok(incoming) => {
                self.phase = Phase::Data(helo, tx, incoming, DataReceiver::new());
                Reply::new(354, "", "End data with <CR><LF>.<CR><LF>")
            }
            Err(reply) => {
                self.phase = Phase::Envelope(helo, tx);
                reply
            }
        }
    }

    /// BDAT (RFC 3030): the chunk's bytes follow the command line and are
    /// always read, even when the command is refused, to stay in step.
    pub(super) fn bdat(&mut self, size: u64, last: bool, out: &mut Replies) -> Option<Reply> {
        let phase = std::mem::replace(&mut self.phase, Phase::Closed);
        let discard = |reply: Reply, then: Phase| Phase::Discard {
            remaining: size,
            reply,
            then: Box::new(then),
        };
        self.phase = match phase {
            Phase::Chunked(chunked) => Phase::Chunk(chunked, size, last),
            Phase::Envelope(helo, tx) if tx.recipients.is_empty() => discard(
                Reply::new(554, "5.5.1", "No valid recipients"),
                Phase::Ready(helo),
            ),
            Phase::Envelope(helo, tx) => match self.start_incoming(&tx, &helo) {
                Ok(incoming) => Phase::Chunk(
                    Box::new(Chunked {
                        helo,
                        tx,
                        incoming,
                        check: LineEndingCheck::default(),
                    }),
                    size,
                    last,
                ),
                Err(reply) => discard(reply, Phase::Ready(helo)),
            },
            Phase::Ready(helo) => discard(
                Reply::new(503, "5.5.1", "Need MAIL command first"),
                Phase::Ready(helo),
            ),
            other => discard(
                Reply::new(503, "5.5.1", "Send EHLO or HELO first"),
                other.without_transaction(),
            ),
        };
        (size == 0).then(|| match self.phase {
            Phase::Discard { .. } => self.finish_discard(),
            _ => self.finish_chunk(out),
        })
    }

    pub(super) fn finish_discard(&mut self) -> Reply {
        match std::mem::replace(&mut self.phase, Phase::Closed) {
            Phase::Discard { reply, then, .. } => {
                self.phase = *then;
                reply
            }
            other => {
                self.phase = other;
                temporary_storage_failure()
            }
        }
    }

    pub(super) fn finish_chunk(&mut self, out: &mut Replies) -> Reply {
        let Phase::Chunk(chunked, _, last) = std::mem::replace(&mut self.phase, Phase::Closed)
        else {
            return temporary_storage_failure();
        };
        let Chunked {
            helo,
            tx,
            incoming,
            check,
        } = *chunked;
        if !last {
            if incoming.intake.too_large() {
                // RFC 3030 section 4.2: a failed chunk fails the transaction.
                self.phase = Phase::Ready(helo);
                return Reply::too_big();
            }
            let received = incoming.intake.size();
            self.phase = Phase::Chunked(Box::new(Chunked {
                helo,
                tx,
                incoming,
                check,
            }));
            return Reply::new(250, "2.0.0", format!("{received} octets received"));
        }
        let ending = match check.finish() {
            true => LineEnds::HadBare,
            false => LineEnds::Crlf,
        };
        let reply = self.complete_message(tx, incoming, ending, out);
        self.phase = Phase::Ready(helo);
        reply
    }

    pub(super) fn finish_data(&mut self, out: &mut Replies) -> Reply {
        let Phase::Data(helo, tx, incoming, receiver) =
            std::mem::replace(&mut self.phase, Phase::Closed)
        else {
            return temporary_storage_failure();
        };
        let ending = match receiver.saw_bare_line_ending() {
            true => LineEnds::HadBare,
            false => LineEnds::Crlf,
        };
        let reply = self.complete_message(tx, incoming, ending, out);
        self.phase = Phase::Ready(helo);
        reply
    }

    pub(super) fn complete_message(
        &mut self,
        tx: Transaction,
        mut incoming: Incoming,
        ending: LineEnds,
        out: &mut Replies,
    ) -> Reply {
        let qid = &tx.queue_id;
        let tls = self.tls.as_ref().map(|t| t.version.clone());
        let size = incoming.intake.size();
        let summary = format!(
            "smtp[{qid}] tls={} from=<{}> size={} rcpts={} message_id={}",
            tls.as_deref().unwrap_or("none"),
            tx.mail_from.0,
            size,
            tx.recipients.len(),
            incoming.message_id.message_id().unwrap_or("none")
        );
        let sink = match incoming.intake.finish() {
            Ok(sink) => sink,
            Err(Refused::TooLarge) => {
                info!("{summary} result=rejected reason=too-large");
                return Reply::too_big();
            }
            Err(Refused::Failed(e)) => {
                warn!("{summary} result=deferred reason=storage error={e}");
                crate::metrics::refused("smtp", "storage");
                return temporary_storage_failure();
            }
        };
        if ending == LineEnds::HadBare {
            info!("{summary} result=rejected reason=bare-cr-or-lf");
            return Reply::new(
                550,
                "5.6.0",
                "Message contains a bare CR or LF; lines must end with CRLF (RFC 5321 section 2.3.8)",
            );
        }
        let envelope = Envelope {
            queue_id: tx.queue_id.clone(),
            mail_from: tx.mail_from.0.clone(),
            recipients: tx.recipients,
            client_ip: self.client_ip,
            tls,
            size,
        };
        match sink.deliver(&envelope) {
            Ok(stored) => {
                info!(
                    "{summary} result=stored mailboxes={} files={}",
                    stored
                        .iter()
                        .map(|(id, _)| id.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                    stored
                        .iter()
                        .map(|(_, name)| name.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                );
                // A client that delivers is doing real work: its earlier
                // errors (a few unknown recipients) are forgiven.
                out.forgive();
                Reply::new(250, "2.0.0", format!("Ok: queued as {qid}"))
            }
            Err(e) if e.is_permanent() => {
                // The recipient mailboxes went away during the transaction:
                // retrying cannot help, so the sender may as well know now.
                info!("{summary} result=rejected reason=gone error={e}");
                Reply::new(550, "5.1.1", "The mailbox no longer exists")
            }
            Err(e) => {
                warn!("{summary} result=deferred reason=storage error={e}");
                crate::metrics::refused("smtp", "storage");
                temporary_storage_failure()
            }
        }
    }

    /// `Received:` (RFC 5321 section 4.4), with the TLS details as Postfix writes them.
    pub(super) fn received_header(&self, tx: &Transaction, helo: &Helo) -> String {
        let ip = match self.client_ip {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
        };
        // RFC 3848 and RFC 6531 section 4.3 "with" protocol names.
        let mut protocol = match (helo.extended, tx.params.smtputf8) {
            (false, _) => "SMTP".to_string(),
            (true, false) => "ESMTP".to_string(),
            (true, true) => "UTF8SMTP".to_string(),
        };
        let mut tls_line = String::new();
        if let Some(tls) = &self.tls {
            protocol.push('S');
            tls_line = format!("\r\n\t(using {} with cipher {})", tls.version, tls.cipher);
        }
        let body = match tx.params.body {
            Body::EightBitMime => " (8BITMIME)",
            Body::SevenBit => "",
        };
        let name = if helo.name.is_empty() {
            "unknown"
        } else {
            &helo.name
        };
        format!(
            "Received: from {name} ({ip}){tls_line}\r\n\tby {} (Sealpost) with {protocol}{body} id {};\r\n\t{}\r\n",
            self.settings.hostname,
            tx.queue_id,
            timestamp::rfc5322(SystemTime::now())
        )
    }
}
