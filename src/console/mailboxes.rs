//! The mailbox pages and operations: one function per operation, each
//! answering with an [`Outcome`] that the dispatch turns into a redirect
//! (post/redirect/get) or a page.

use super::*;

impl ConsoleService {
    pub(super) fn mailbox_page(
        &self,
        id: &MailboxId,
        csrf: &str,
        notice: Option<&str>,
        error: Option<&str>,
        status: u16,
    ) -> Response {
        let mailbox = match self.store.mailbox(id) {
            Ok(mailbox) => mailbox,
            Err(e) => return self.store_problem(e, csrf),
        };
        let (state, warnings) = match status::mailbox_status(
            &mailbox,
            SystemTime::now(),
            status::DEFAULT_MAX_PENDING_AGE,
        ) {
            Ok(pair) => pair,
            Err(e) => return self.store_problem(e, csrf),
        };
        let address = self.address(id);
        let pop3 = self.pop3_endpoints();
        let view = pages::MailboxView {
            status: &state,
            description: &mailbox.info().description,
            access: pages::Access {
                id: id.as_str(),
                address: &address,
                pop3: &pop3,
            },
            public_only: mailbox.is_public_only(),
        };
        let error = error
            .map(str::to_owned)
            .or_else(|| (!warnings.is_empty()).then(|| warnings.join(" ")));
        let title = format!("Mailbox {}", mailbox.info().name);
        self.page(
            status,
            Some(csrf),
            &title,
            pages::mailbox(&view, csrf, notice, error.as_deref()),
        )
    }

    pub(super) fn store_problem(&self, e: StoreError, csrf: &str) -> Response {
        let status = match &e {
            StoreError::NotFound(_) => 404,
            StoreError::InUse(_) | StoreError::NotEmpty(..) => 409,
            StoreError::Invalid(_) | StoreError::WrongPassword(_) | StoreError::PublicOnly(_) => {
                400
            }
            _ => {
                warn!("console: {e}");
                500
            }
        };
        self.problem(status, &e.to_string(), Some(csrf))
    }

    pub(super) fn create(&self, form: &Form, session: &Active) -> Response {
        let (name, description) = (form.get("name").trim(), form.get("description").trim());
        let created = self.kdf_slots.run(|| {
            admin::create_mailbox(
                &self.store,
                self.config.kdf.params(),
                name,
                description,
                NewPassword::Generate,
            )
        });
        match created {
            Ok((mailbox, password)) => {
                let id = mailbox.id().clone();
                info!("console: mailbox {id} created");
                self.redirect_showing(
                    session,
                    &id,
                    "created",
                    "The mailbox was created.",
                    password,
                )
            }
            Err(e) => {
                let content =
                    pages::new_mailbox(&session.csrf, name, description, Some(&e.to_string()));
                self.page(400, Some(&session.csrf), "New mailbox", content)
            }
        }
    }

    /// Post/Redirect/Get for an operation that made a password: it is kept
    /// in the server-side session and shown once by the page the redirect
    /// leads to; no URL carries it, and a refresh neither repeats the
    /// operation nor shows the password again.
    pub(super) fn redirect_showing(
        &self,
        session: &Active,
        id: &MailboxId,
        done: &str,
        heading: &str,
        password: Option<Password>,
    ) -> Response {
        if let Some(password) = password {
            self.sessions.keep_once(
                session,
                ShownOnce {
                    mailbox: id.clone(),
                    heading: heading.to_owned(),
                    password,
                },
            );
        }
        Response::redirect(&format!("/mailboxes/{id}?done={done}"))
    }

    /// The new password a form asks for: chosen, or generated when empty.
    pub(super) fn new_password(form: &Form) -> NewPassword {
        match form.get("new") {
            "" => NewPassword::Generate,
            chosen => NewPassword::Chosen(Password::new(chosen.to_owned())),
        }
    }

    /// A mailbox operation posted from its page: one function per
    /// operation, each answering with an [`Outcome`] this maps to a page.
    pub(super) fn mailbox_op(
        &self,
        form: &Form,
        id: &MailboxId,
        op: &str,
        session: &Active,
        peer: SocketAddr,
    ) -> Response {
        let csrf = session.csrf.as_str();
        let again =
            |error: &str, status: u16| self.mailbox_page(id, csrf, None, Some(error), status);
        let mut mailbox: Mailbox = match self.store.mailbox(id) {
            Ok(mailbox) => mailbox,
            Err(e) => return self.store_problem(e, csrf),
        };
        let outcome = match op {
            "edit" => Self::op_edit(form, &mut mailbox),
            "status" => Self::op_status(form, &mut mailbox),
            "password" => self.op_password(form, id, session, peer),
            "reset" => self.op_reset(form, id, session),
            "delete" => self.op_delete(form, &mailbox),
            _ => return self.problem(404, "There is no such operation.", Some(csrf)),
        };
        match outcome {
            Outcome::Done(response) => {
                info!("console: mailbox {id}: {op} done");
                response
            }
            Outcome::Again(error, status) => again(&error, status),
            Outcome::Failed(AdminError::WeakPassword(why)) => again(
                &format!(
                    "{why} (leave the field empty to have a strong one generated); nothing was changed."
                ),
                400,
            ),
            Outcome::Failed(e) if is_wrong_password(&e) => {
                again("The current password is wrong; nothing was changed.", 403)
            }
            Outcome::Failed(AdminError::Store(e)) => match e {
                StoreError::Invalid(why) => again(&format!("{why}; nothing was changed."), 400),
                e => self.store_problem(e, csrf),
            },
            Outcome::Failed(e) => {
                warn!("console: mailbox {id}: {op}: {e}");
                again(&e.to_string(), 500)
            }
        }
    }

    pub(super) fn op_edit(form: &Form, mailbox: &mut Mailbox) -> Outcome {
        let (name, description) = (form.get("name").trim(), form.get("description").trim());
        let id = mailbox.id().clone();
        Outcome::from(
            mailbox
                .update(Some(name.to_owned()), Some(description.to_owned()))
                .map(|()| done(&id, "updated"))
                .map_err(AdminError::from),
        )
    }

    pub(super) fn op_status(form: &Form, mailbox: &mut Mailbox) -> Outcome {
        let status = match form.get("status") {
            "active" => Status::Active,
            "suspended" => Status::Suspended,
            _ => return Outcome::Again("Unknown status.".into(), 400),
        };
        let id = mailbox.id().clone();
        Outcome::from(
            mailbox
                .set_status(status)
                .map(|()| done(&id, status.as_str()))
                .map_err(AdminError::from),
        )
    }

    /// A guessed current password would open the mail stored so far, which
    /// even the administrator cannot read: guesses count like POP3 logins,
    /// per address and per mailbox.
    pub(super) fn op_password(
        &self,
        form: &Form,
        id: &MailboxId,
        session: &Active,
        peer: SocketAddr,
    ) -> Outcome {
        let Ok(attempt) = self.throttle.begin(peer.ip(), Some(id)) else {
            warn!(
                "console {peer}: mailbox {id}: password change refused: too many wrong passwords"
            );
            return Outcome::Again(
                "Too many wrong passwords from your address or for this mailbox; nothing was changed. Try again later, or end the lockout with sealpost lockouts.".into(),
                429,
            );
        };
        let kdf = self.config.kdf.params();
        let old = Password::new(form.get("old").to_owned());
        let new = Self::new_password(form);
        let changed = self
            .kdf_slots
            .run(|| admin::change_password(&self.store, kdf, id, &old, new));
        match &changed {
            Ok(_) => attempt.succeeded(),
            Err(e) if is_wrong_password(e) => {
                warn!("console {peer}: mailbox {id}: wrong current password");
                let delay = attempt.failed();
                Surroundings::hold_back(&self.env, delay);
            }
            // Refused for another reason (a weak new password): no guess was made.
            Err(_) => drop(attempt),
        }
        Outcome::from(changed.map(|generated| {
            self.redirect_showing(
                session,
                id,
                "password",
                "The password was changed; the stored mail stays readable with it.",
                generated,
            )
        }))
    }

    pub(super) fn op_reset(&self, form: &Form, id: &MailboxId, session: &Active) -> Outcome {
        if !form.ticked("confirm") {
            return Outcome::Again(
                "Tick the box to confirm that the mail stored so far becomes unreadable; nothing was changed.".into(),
                400,
            );
        }
        let kdf = self.config.kdf.params();
        let new = Self::new_password(form);
        Outcome::from(
            self.kdf_slots
                .run(|| admin::reset_password(&self.store, kdf, id, new))
                .map(|(_, generated)| {
                    self.redirect_showing(
                        session,
                        id,
                        "reset",
                        "The password was reset with new keys.",
                        generated,
                    )
                }),
        )
    }

    /// Only a suspended mailbox, only with its name typed (and with its
    /// messages only when that is ticked too).
    pub(super) fn op_delete(&self, form: &Form, mailbox: &Mailbox) -> Outcome {
        let id = mailbox.id();
        if form.get("confirm_name").trim() != mailbox.info().name.trim() {
            return Outcome::Again(
                "Type the mailbox's name to confirm the deletion; nothing was deleted.".into(),
                400,
            );
        }
        let how = Deletion {
            messages_too: form.ticked("confirm"),
            even_if_active: false,
        };
        match self.store.delete_mailbox(id, how) {
            Ok(removed) => {
                info!("console: mailbox {id} deleted ({removed} message(s) removed)");
                Outcome::Done(Response::redirect("/?done=deleted"))
            }
            Err(StoreError::Active(_)) => Outcome::Again(
                "Only a suspended mailbox can be deleted: suspend it first, so that a journal rule still pointing at it gets a temporary error while it is changed; nothing was deleted.".into(),
                409,
            ),
            Err(StoreError::NotEmpty(_, n)) => Outcome::Again(
                format!(
                    "The mailbox still holds {n} message(s) nobody retrieved. Tick \"Delete them too\" to delete it anyway; nothing was deleted."
                ),
                409,
            ),
            Err(e) => Outcome::Failed(e.into()),
        }
    }

    pub(super) fn shown(&self, id: &MailboxId, once: &ShownOnce, csrf: &str) -> Response {
        let name = match self.store.mailbox(id) {
            Ok(mailbox) => mailbox.info().name.clone(),
            Err(e) => return self.store_problem(e, csrf),
        };
        let address = self.address(id);
        let pop3 = self.pop3_endpoints();
        let access = pages::Access {
            id: id.as_str(),
            address: &address,
            pop3: &pop3,
        };
        let content = pages::password_once(&once.heading, once.password.expose(), &access);
        self.page(200, Some(csrf), &format!("Mailbox {name}"), content)
    }
}
