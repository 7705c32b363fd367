//! The proxy's AUTH (RFC 4954, PLAIN and LOGIN): the local checks, then the
//! upstream login, each of its effects a step for the driver.

use super::*;

impl<R: Relay> SmtpProxy<R> {
    /// The line after a 334: a SASL response (RFC 4954 section 4), or `*`
    /// to cancel.
    pub(super) fn auth_response(&mut self, phase: Phase, line: &[u8], out: &mut Replies) -> Step {
        if line == sasl::CANCEL {
            return self.say(cancelled(), out);
        }
        match phase {
            Phase::AuthLoginUser => match sasl::login_response(line) {
                Some(user) => {
                    self.phase = Phase::AuthLoginPassword(user);
                    self.say(Reply::new(334, "", sasl::LOGIN_PASSWORD_CHALLENGE), out)
                }
                None => self.say(undecodable(), out),
            },
            Phase::AuthLoginPassword(user) => match sasl::login_response(line) {
                Some(pw) if !pw.is_empty() => self.login(&user, Password::new(pw), out),
                _ => self.say(undecodable(), out),
            },
            _ => self.auth_plain(line, out),
        }
    }

    pub(super) fn auth(
        &mut self,
        mechanism: &str,
        initial: Option<String>,
        out: &mut Replies,
    ) -> Step {
        if self.tls.is_none() {
            // RFC 4954 section 6: the credentials are never looked at.
            return self.say(
                Reply::new(
                    538,
                    "5.7.11",
                    "Encryption required for requested authentication mechanism",
                ),
                out,
            );
        }
        match self.phase {
            Phase::Ready => {}
            Phase::Greeted => return self.say(Reply::new(503, "5.5.1", "Send EHLO first"), out),
            _ => return self.say(Reply::new(503, "5.5.1", "Already authenticated"), out),
        }
        match (mechanism, initial) {
            ("PLAIN", Some(response)) if response != sasl::EMPTY_INITIAL => {
                self.auth_plain(response.as_bytes(), out)
            }
            ("PLAIN", _) => {
                self.phase = Phase::AuthPlain;
                self.say(Reply::new(334, "", ""), out)
            }
            ("LOGIN", None) => {
                self.phase = Phase::AuthLoginUser;
                self.say(Reply::new(334, "", sasl::LOGIN_USER_CHALLENGE), out)
            }
            ("LOGIN", Some(user)) => match sasl::login_response(user.as_bytes()) {
                Some(user) => {
                    self.phase = Phase::AuthLoginPassword(user);
                    self.say(Reply::new(334, "", sasl::LOGIN_PASSWORD_CHALLENGE), out)
                }
                None => self.say(undecodable(), out),
            },
            _ => self.say(
                Reply::new(504, "5.5.4", "Unsupported mechanism; use PLAIN or LOGIN"),
                out,
            ),
        }
    }

    pub(super) fn auth_plain(&mut self, response: &[u8], out: &mut Replies) -> Step {
        if response == sasl::CANCEL {
            return self.say(cancelled(), out);
        }
        match sasl::plain(&String::from_utf8_lossy(response)) {
            Some((user, password)) => self.login(&user, password, out),
            None => self.say(Reply::new(501, "5.5.2", "Malformed PLAIN response"), out),
        }
    }

    /// The local checks, then the upstream login.
    pub(super) fn login(&mut self, name: &str, password: Password, out: &mut Replies) -> Step {
        let authorized = match self.relay.authorize(name, password) {
            Ok(authorized) => authorized,
            Err(refusal) => return self.refused(refusal, out),
        };
        let (login, first) = Login::start(self.relay.dialer(), &authorized);
        self.logging_in(login, Box::new(authorized), first, out)
    }

    pub(super) fn logging_in(
        &mut self,
        login: Login,
        authorized: Box<Authorized>,
        progress: Progress<Result<Link, OpenError>>,
        out: &mut Replies,
    ) -> Step {
        match progress {
            Progress::Io(request) => {
                self.phase = Phase::LoggingIn(Box::new(login), authorized);
                Step::Upstream(request)
            }
            Progress::Done(result) => {
                let (outcome, link) = match result {
                    Ok(link) => (Ok(()), Some(link)),
                    Err(e) => (Err(e), None),
                };
                match (self.relay.finish_login(*authorized, outcome), link) {
                    (Ok(login), Some(link)) => {
                        self.phase = Phase::Relaying(Relaying {
                            mailbox: login.mailbox,
                            link,
                            tx: None,
                        });
                        self.say(Reply::new(235, "2.7.0", "Authentication successful"), out)
                    }
                    (Ok(_), None) => self.say(lost(&"no upstream session"), out),
                    (Err(refusal), _) => {
                        let step = self.refused(refusal, out);
                        if matches!(step, Step::Continue) {
                            // The upstream connection is of no use any more.
                            self.phase = Phase::Disconnecting;
                            return Step::Upstream(Request::Disconnect);
                        }
                        step
                    }
                }
            }
        }
    }

    pub(super) fn refused(&mut self, refusal: Refusal, out: &mut Replies) -> Step {
        out.owe_login_delay(refusal.delay);
        self.phase = Phase::Ready;
        let reply = match refusal.failure {
            LoginFailure::Refused => Reply::new(AUTH_REFUSED.0, AUTH_REFUSED.1, AUTH_REFUSED.2),
            LoginFailure::Temporary => Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure; try again later",
            ),
        };
        self.say(reply, out)
    }
}

fn cancelled() -> Reply {
    Reply::new(501, "5.0.0", "Authentication cancelled")
}

fn undecodable() -> Reply {
    Reply::new(501, "5.5.2", "Cannot decode the response")
}
