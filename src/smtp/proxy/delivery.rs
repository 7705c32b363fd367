//! The proxy's DATA: the client's message into a durable copy, then
//! upstream; the copy becomes visible only when the upstream took it.

use super::*;

impl<R: Relay> SmtpProxy<R> {
    pub(super) fn data(&mut self, out: &mut Replies) -> Step {
        let r = match self.relaying(out) {
            Ok(r) => r,
            Err(step) => return step,
        };
        let refusal = match &r.tx {
            None => Some(Reply::new(503, "5.5.1", "Need MAIL command first")),
            Some(tx) if tx.accepted.is_empty() => {
                Some(Reply::new(554, "5.5.1", "No valid recipients"))
            }
            Some(_) => None,
        };
        if let Some(reply) = refusal {
            self.phase = Phase::Relaying(r);
            return self.say(reply, out);
        }
        match self.relay.start_copy(&r.mailbox) {
            Ok(sink) => {
                let intake = Intake::new(sink, self.settings.max_message_bytes);
                self.phase = Phase::Data(r, intake, DataReceiver::normalizing());
                self.say(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"), out)
            }
            Err(e) => {
                warn!("smtp proxy: cannot start a copy for {}: {e}", r.mailbox);
                self.phase = Phase::Relaying(r);
                self.say(cannot_archive(), out)
            }
        }
    }

    /// The end of the client's data: the copy first, then the upstream.
    pub(super) fn finish_data(&mut self, out: &mut Replies) -> Step {
        let Phase::Data(mut r, intake, _) = std::mem::replace(&mut self.phase, Phase::Closed)
        else {
            return Step::Close;
        };
        let tx = r.tx.take().unwrap_or(Transaction {
            mail_from: String::new(),
            accepted: Vec::new(),
        });
        let summary = format!(
            "smtp proxy {}: mailbox={} from=<{}> rcpts={} size={}",
            self.client_ip,
            r.mailbox,
            tx.mail_from,
            tx.accepted.len(),
            intake.size()
        );
        let size = intake.size();
        let sink = match intake.finish() {
            Ok(sink) => sink,
            Err(Refused::TooLarge) => {
                info!("{summary} result=rejected reason=too-large");
                return self.abandon(r, Reply::too_big(), out);
            }
            Err(Refused::Failed(e)) => return self.copy_failed(r, &summary, &e, out),
        };
        let facts = CopyFacts {
            mail_from: tx.mail_from,
            rcpt_to: tx.accepted,
            client_ip: self.client_ip,
            tls: self.tls.as_ref().map(|t| t.version.clone()),
            size,
            upstream: None,
        };
        // The archiving rule: the copy is durable before anything is sent.
        let copy = match sink.prepare(facts) {
            Ok(copy) => copy,
            Err(e) => return self.copy_failed(r, &summary, &e, out),
        };
        let message = match copy.message() {
            Ok(m) => m,
            Err(e) => return self.copy_failed(r, &summary, &e, out),
        };
        let (outbound, request) = Outbound::start(&r.link, message);
        self.phase = Phase::Sending(
            r,
            Box::new(Delivery {
                copy,
                outbound,
                summary,
            }),
        );
        Step::Upstream(request)
    }

    /// A copy that cannot be made: nothing is sent.
    pub(super) fn copy_failed(
        &mut self,
        r: Relaying,
        summary: &str,
        why: &dyn std::fmt::Display,
        out: &mut Replies,
    ) -> Step {
        warn!("{summary} result=deferred reason=copy error={why}");
        self.abandon(r, cannot_archive(), out)
    }

    /// Anything refused before DATA upstream clears the upstream envelope.
    pub(super) fn abandon(&mut self, r: Relaying, reply: Reply, out: &mut Replies) -> Step {
        self.relay_command(r, Waiting::Abandon(reply), "RSET", out)
    }

    pub(super) fn delivered(
        &mut self,
        r: Relaying,
        delivery: Delivery,
        outcome: SendOutcome,
        out: &mut Replies,
    ) -> Step {
        let Delivery { copy, summary, .. } = delivery;
        self.phase = Phase::Relaying(r);
        let reply = match outcome {
            SendOutcome::Reply(reply) if reply.is_success() => {
                out.forgive();
                match copy.commit() {
                    Ok(name) => {
                        info!(
                            "{summary} result=sent copy={name} upstream=\"{} {}\"",
                            reply.code, reply.text
                        );
                        Reply::new(250, "2.0.0", "Ok: sent, and a copy archived")
                    }
                    Err(e) => {
                        // Sent, and the copy is durable in tmp/ but could not be
                        // renamed: say so loudly, but the client must not resend.
                        warn!("{summary} result=sent copy-not-visible error={e}");
                        Reply::new(250, "2.0.0", "Ok: sent")
                    }
                }
            }
            SendOutcome::Reply(reply) => {
                info!(
                    "{summary} result=refused upstream=\"{} {}\"",
                    reply.code, reply.text
                );
                relayed(&reply, "Message")
            }
            SendOutcome::LostBeforeEnd(e) => {
                warn!("{summary} result=deferred reason=upstream-lost-before-end error={e}");
                lost(&e)
            }
            SendOutcome::LostAfterEnd(e) => {
                // The upstream may have accepted it: keep the copy.
                let kept = copy
                    .commit()
                    .map_err(|e| format!("not visible: {e}"))
                    .unwrap_or_else(|e| e);
                warn!(
                    "{summary} result=unknown reason=upstream-lost-after-end copy={kept} error={e}"
                );
                lost(&e)
            }
        };
        self.say(reply, out)
    }
}
