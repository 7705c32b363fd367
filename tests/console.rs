//! The web console over real HTTPS: the administrator's login, sessions,
//! lockouts and CSRF protection, every mailbox operation, escaping, and
//! that no secret reaches a URL or the log.

// A test tells one story from start to end; only production code is held
// to the 80 lines of clippy.toml.
#![allow(clippy::too_many_lines)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::gateway::{Gateway, LineClient};
use support::https::{Client, Page};
use support::{Sandbox, merge, stderr, stdout};

const ADMIN: &str = "Tangerine-Orbit-Glacier-42";
const MESSAGE: &[u8] = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: kept\r\n\r\nThe body stays readable.\r\n";

fn sandbox(label: &str, extra: serde_json::Value) -> Sandbox {
    let mut config = json!({ "console": { "listen": ["127.0.0.1:0"] } });
    merge(&mut config, extra);
    Sandbox::for_gateway(label, config)
}

fn set_admin_password(sb: &Sandbox, password: &str) -> std::process::Output {
    sb.run_with_input(
        &["console", "passwd", "--password-file", "-"],
        format!("{password}\n").as_bytes(),
    )
}

/// A gateway with an administrator password, and a client of its console.
fn console(label: &str, extra: serde_json::Value) -> (Sandbox, Gateway, Client) {
    let sb = sandbox(label, extra);
    let out = set_admin_password(&sb, ADMIN);
    assert!(out.status.success(), "{}", stderr(&out));
    let gw = Gateway::start(&sb);
    let client = Client::new(gw.addr("console.listen[0]"), &gw.cert);
    (sb, gw, client)
}

/// [`console`], logged in.
fn logged_in(label: &str, extra: serde_json::Value) -> (Sandbox, Gateway, Client) {
    let (sb, gw, mut client) = console(label, extra);
    let answer = client.login(ADMIN);
    assert_eq!(answer.status, 303, "{}", answer.body);
    assert_eq!(answer.header("location"), Some("/"));
    (sb, gw, client)
}

/// A POP3 login over implicit TLS; the open session when it succeeds.
fn pop3_login(gw: &Gateway, user: &str, password: &str) -> Result<LineClient, String> {
    let mut pop3 = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &gw.cert);
    pop3.read_line();
    pop3.pop3(&format!("USER {user}"));
    let reply = pop3.pop3(&format!("PASS {password}"));
    if reply.starts_with("+OK") {
        Ok(pop3)
    } else {
        Err(reply)
    }
}

fn mailbox_json(sb: &Sandbox, id: &str) -> serde_json::Value {
    let out = sb.run(&["mailbox", "show", id, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn deliver(sb: &Sandbox, id: &str) {
    let out = sb.run_with_input(&["mailbox", "deliver", id], MESSAGE);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// The mailbox id in a page that shows a journal address.
fn id_in(page: &Page) -> String {
    let address = page.text_of("address").expect("an address on the page");
    address.split('@').next().unwrap().to_string()
}

#[test]
fn without_an_administrator_password_the_console_only_says_how_to_set_one() {
    let sb = sandbox("console-setup", json!({}));
    let gw = Gateway::start(&sb);
    let mut client = Client::new(gw.addr("console.listen[0]"), &gw.cert);
    for path in ["/", "/login", "/mailboxes/new"] {
        let page = client.get(path);
        assert_eq!(page.status, 503, "{path}");
        assert!(
            page.body.contains("sealpost console passwd"),
            "{}",
            page.body
        );
        assert!(!page.body.contains("type=\"password\""), "no login form");
    }
    let page = client.post("/login", &[("password", ""), ("csrf", "")]);
    assert_eq!(page.status, 503);
    // The same strength rule as mailbox passwords; nothing is stored.
    let out = set_admin_password(&sb, "sealpost1234");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("too easy to guess"),
        "{}",
        stderr(&out)
    );
    assert!(!sb.data().join("console-password").exists());
    let out = set_admin_password(&sb, "short");
    assert!(
        stderr(&out).contains("at least 12 characters"),
        "{}",
        stderr(&out)
    );
    let out = set_admin_password(&sb, ADMIN);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Log in at https://127.0.0.1:0"));
    let stored = std::fs::read_to_string(sb.data().join("console-password")).unwrap();
    assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
    assert!(!stored.contains(ADMIN));
    // The running gateway uses it at once.
    let page = client.get("/");
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    assert_eq!(client.login(ADMIN).status, 303);
}

#[test]
fn login_opens_a_strict_session_and_logout_ends_it() {
    let (sb, gw, mut client) = console("console-login", json!({}));
    let page = client.get("/");
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    let wrong = client.login("Not-The-Password-1234");
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong password"));
    assert!(!client.cookies.contains_key("__Host-sealpost"));

    let answer = client.login(ADMIN);
    assert_eq!(answer.status, 303);
    let set = answer
        .headers("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("__Host-sealpost="))
        .expect("a session cookie")
        .to_string();
    for attribute in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    let token = client.cookies["__Host-sealpost"].clone();
    assert_eq!(token.len(), 64);

    let dashboard = client.get("/");
    assert_eq!(dashboard.status, 200);
    assert!(dashboard.body.contains("<h1>Dashboard</h1>"));
    // The chain of custody's state, with no TSA configured here.
    assert!(
        dashboard.body.contains("Chain of custody") && dashboard.body.contains("no anchor yet"),
        "{}",
        dashboard.body
    );
    let csp = dashboard.header("content-security-policy").unwrap();
    for rule in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(rule), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(dashboard.header("x-frame-options"), Some("DENY"));
    assert_eq!(dashboard.header("referrer-policy"), Some("same-origin"));
    assert_eq!(dashboard.header("cache-control"), Some("no-store"));

    let logout = client.post("/logout", &[("csrf", &dashboard.csrf())]);
    assert_eq!(
        (logout.status, logout.header("location")),
        (303, Some("/login"))
    );
    assert!(!client.cookies.contains_key("__Host-sealpost"));
    // The old token is dead on the server, not just forgotten by the client.
    client.cookies.insert("__Host-sealpost".into(), token);
    let page = client.get("/");
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    gw.wait_for_log("console 127.0.0.1", Duration::from_secs(5));
    assert!(gw.log().contains("wrong administrator password"));
    assert!(gw.log().contains("administrator logged in"));

    // A new administrator password ends the sessions opened under the old one.
    assert_eq!(client.login(ADMIN).status, 303);
    assert_eq!(client.get("/").status, 200);
    let newer = "Harbour-Pepper-Violin-Comet-58";
    assert!(set_admin_password(&sb, newer).status.success());
    let page = client.get("/");
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
    assert_eq!(client.login(ADMIN).status, 401);
    assert_eq!(client.login(newer).status, 303);
}

#[test]
fn an_empty_listen_list_turns_the_console_off() {
    let sb = Sandbox::for_gateway("console-off", json!({ "console": { "listen": [] } }));
    let gw = Gateway::start(&sb);
    assert!(!gw.log().contains("console.listen"), "{}", gw.log());
    let out = sb.run(&["status", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = report["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"pop3.listen[0]"), "{keys:?}");
    assert!(!keys.iter().any(|k| k.starts_with("console")), "{keys:?}");
}

#[test]
fn failed_logins_are_delayed_and_lock_the_address_out_like_mail_logins() {
    let (sb, _gw, mut client) = console(
        "console-lockout",
        json!({ "limits": { "max_failed_logins": 3, "failed_login_delay_ms": 400 } }),
    );
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(client.login("Wrong-Password-Entirely-9").status, 401);
        assert!(started.elapsed() >= Duration::from_millis(400), "delayed");
    }
    let locked = client.login(ADMIN);
    assert_eq!(locked.status, 429);
    assert!(
        locked.body.contains("Too many failed logins"),
        "{}",
        locked.body
    );
    assert!(!client.cookies.contains_key("__Host-sealpost"));
    let out = sb.run(&["lockouts"]);
    assert!(
        stdout(&out).contains("console") && stdout(&out).contains("127.0.0.1"),
        "{}",
        stdout(&out)
    );
    let out = sb.run(&["lockouts", "clear", "127.0.0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(client.login(ADMIN).status, 303);

    // Guessing a mailbox's current password in the change form counts the
    // same way: it would open the mail stored so far.
    let (id, password) = sb.create_mailbox("Guessed");
    let csrf = client.get(&format!("/mailboxes/{id}")).csrf();
    let change = format!("/mailboxes/{id}/password");
    for _ in 0..3 {
        let guess = client.post(
            &change,
            &[("csrf", &csrf), ("old", "guess-guess-guess"), ("new", "")],
        );
        assert_eq!(guess.status, 403);
    }
    let locked = client.post(&change, &[("csrf", &csrf), ("old", &password), ("new", "")]);
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert!(locked.body.contains("Too many wrong passwords"));
    let out = sb.run(&["lockouts"]);
    assert!(stdout(&out).contains(&id), "{}", stdout(&out));
}

#[test]
fn an_idle_session_expires_and_its_forms_change_nothing() {
    let (sb, _gw, mut client) = logged_in(
        "console-idle",
        json!({ "console": { "session_idle_secs": 1 } }),
    );
    let (id, _) = sb.create_mailbox("Idle");
    let page = client.get(&format!("/mailboxes/{id}"));
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let idle_past = Instant::now() + Duration::from_millis(1500);
    support::wait_until("the session's idle time passes", || {
        Instant::now() >= idle_past
    });
    let post = client.post(
        &format!("/mailboxes/{id}/status"),
        &[("csrf", &csrf), ("status", "suspended")],
    );
    assert_eq!(
        (post.status, post.header("location")),
        (303, Some("/login"))
    );
    assert_eq!(mailbox_json(&sb, &id)["status"], "active");
    let page = client.get("/");
    assert_eq!(
        (page.status, page.header("location")),
        (303, Some("/login"))
    );
}

#[test]
fn state_changes_need_the_sessions_csrf_token_and_this_origin() {
    let (sb, _gw, mut client) = logged_in("console-csrf", json!({}));
    let (id, _) = sb.create_mailbox("Guarded");
    let path = format!("/mailboxes/{id}/status");
    let csrf = client.get(&format!("/mailboxes/{id}")).csrf();
    let missing = client.post(&path, &[("status", "suspended")]);
    assert_eq!(missing.status, 403);
    assert!(missing.body.contains("nothing was changed"));
    let forged = client.post(&path, &[("csrf", &"0".repeat(64)), ("status", "suspended")]);
    assert_eq!(forged.status, 403);
    let foreign = client.post_from(
        &path,
        &[("csrf", &csrf), ("status", "suspended")],
        Some("https://evil.example"),
    );
    assert_eq!(foreign.status, 403);
    assert_eq!(mailbox_json(&sb, &id)["status"], "active");
    // GET never changes anything.
    assert_eq!(client.get(&format!("/mailboxes/{id}/delete")).status, 404);
    assert!(sb.mailbox_dir(&id).exists());
    // Logout is a state change too.
    assert_eq!(client.post("/logout", &[]).status, 403);
    assert_eq!(client.get("/").status, 200);
    // With the token it works.
    let ok = client.post(&path, &[("csrf", &csrf), ("status", "suspended")]);
    assert_eq!(ok.status, 303);
    assert_eq!(mailbox_json(&sb, &id)["status"], "suspended");

    // A login form posted without the form's own cookie (from another
    // site, say) is refused before the password is looked at.
    let mut stranger = Client::new(client_addr(&client), &_gw.cert);
    let answer = stranger.post("/login", &[("csrf", &csrf), ("password", ADMIN)]);
    assert_eq!(answer.status, 403);
    assert!(!stranger.cookies.contains_key("__Host-sealpost"));
}

fn client_addr(client: &Client) -> SocketAddr {
    let port: u16 = client.host().rsplit(':').next().unwrap().parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn every_mailbox_operation_works_from_the_console() {
    let (sb, gw, mut client) = logged_in("console-ops", json!({}));
    let form = client.get("/mailboxes/new");
    assert_eq!(form.status, 200);

    // Create: the password is shown once, with the address and POP3 login.
    let created = client.post(
        "/mailboxes",
        &[
            ("csrf", &form.csrf()),
            ("name", "Journal"),
            ("description", "Microsoft 365"),
        ],
    );
    // Post/Redirect/Get: the password is not in the redirect, only on the
    // page it leads to, and only once.
    assert_eq!(created.status, 303, "{}", created.body);
    let location = created.header("location").unwrap().to_owned();
    assert!(location.ends_with("?done=created"), "{location}");
    let created = client.get(&location);
    assert_eq!(created.status, 200, "{}", created.body);
    assert!(created.body.contains("shown only this once"));
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let password = created.text_of("password").unwrap();
    assert!(password.len() >= 20, "{password}");
    let id = id_in(&created);
    assert!(created.body.contains(&format!("{id}@localhost")));
    pop3_login(&gw, &id, &password).expect("the shown password opens POP3");
    let csrf = created.csrf();
    // A refresh shows the mailbox, without the password, and creates nothing.
    let again = client.get(&location);
    assert!(!again.body.contains(&password));
    assert!(!again.body.contains("shown only this once"));
    let out = sb.run(&["mailbox", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    deliver(&sb, &id);
    let page = client.get(&format!("/mailboxes/{id}"));
    assert!(
        page.body.contains("<td class=\"pending\">1 message(s)"),
        "{}",
        page.body
    );

    // Edit.
    let edit = format!("/mailboxes/{id}/edit");
    let done = client.post(
        &edit,
        &[("csrf", &csrf), ("name", "Renamed"), ("description", "d")],
    );
    assert_eq!(
        done.header("location"),
        Some(format!("/mailboxes/{id}?done=updated").as_str())
    );
    assert!(
        client
            .get(done.header("location").unwrap())
            .body
            .contains("Saved.")
    );
    assert_eq!(mailbox_json(&sb, &id)["name"], "Renamed");
    let refused = client.post(
        &edit,
        &[("csrf", &csrf), ("name", ""), ("description", "d")],
    );
    assert_eq!(refused.status, 400);
    assert_eq!(mailbox_json(&sb, &id)["name"], "Renamed");

    // Suspend and resume: a suspended mailbox refuses new mail with a 4xx.
    let status = format!("/mailboxes/{id}/status");
    assert_eq!(
        client
            .post(&status, &[("csrf", &csrf), ("status", "suspended")])
            .status,
        303
    );
    assert_eq!(mailbox_json(&sb, &id)["status"], "suspended");
    let out = sb.run_with_input(&["mailbox", "deliver", &id], MESSAGE);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert_eq!(
        client
            .post(&status, &[("csrf", &csrf), ("status", "active")])
            .status,
        303
    );
    assert_eq!(mailbox_json(&sb, &id)["status"], "active");

    // Change password: needs the old one; keeps the mail.
    let change = format!("/mailboxes/{id}/password");
    let wrong = client.post(
        &change,
        &[("csrf", &csrf), ("old", "not it at all"), ("new", "")],
    );
    assert_eq!(wrong.status, 403);
    assert!(wrong.body.contains("current password is wrong"));
    let weak = client.post(
        &change,
        &[("csrf", &csrf), ("old", &password), ("new", "password")],
    );
    assert_eq!(weak.status, 400);
    assert!(weak.body.contains("too short"), "{}", weak.body);
    pop3_login(&gw, &id, &password).expect("unchanged after refusals");
    let chosen = "Walrus-Lantern-Meadow-Quartz-77";
    let changed = client.post(
        &change,
        &[("csrf", &csrf), ("old", &password), ("new", chosen)],
    );
    assert_eq!(
        changed.header("location"),
        Some(format!("/mailboxes/{id}?done=password").as_str())
    );
    assert!(pop3_login(&gw, &id, &password).is_err());
    let mut pop3 = pop3_login(&gw, &id, chosen).expect("the new password");
    let (reply, body) = pop3.pop3_multi("RETR 1");
    assert!(reply.starts_with("+OK"), "{reply}");
    assert!(support::contains(&body, b"The body stays readable."));
    pop3.pop3("QUIT");
    let generated = client.post(&change, &[("csrf", &csrf), ("old", chosen), ("new", "")]);
    assert_eq!(generated.status, 303);
    let generated = client.get(generated.header("location").unwrap());
    assert!(generated.body.contains("shown only this once"));
    let password = generated.text_of("password").unwrap();
    pop3_login(&gw, &id, &password)
        .expect("the generated password")
        .pop3("QUIT");

    // Reset: only with the explicit confirmation.
    let reset = format!("/mailboxes/{id}/reset");
    let unconfirmed = client.post(&reset, &[("csrf", &csrf), ("new", "")]);
    assert_eq!(unconfirmed.status, 400);
    assert!(unconfirmed.body.contains("nothing was changed"));
    pop3_login(&gw, &id, &password)
        .expect("not reset")
        .pop3("QUIT");
    let done = client.post(&reset, &[("csrf", &csrf), ("confirm", "yes"), ("new", "")]);
    assert_eq!(done.status, 303);
    let done = client.get(done.header("location").unwrap());
    assert!(done.body.contains("reset with new keys"), "{}", done.body);
    let new_password = done.text_of("password").unwrap();
    assert!(pop3_login(&gw, &id, &password).is_err());
    pop3_login(&gw, &id, &new_password)
        .expect("the reset password")
        .pop3("QUIT");
    assert!(sb.mailbox_dir(&id).join("retired-keys").is_dir());

    // Delete: only a suspended mailbox, only with its name typed.
    let delete = format!("/mailboxes/{id}/delete");
    let name = mailbox_json(&sb, &id)["name"].as_str().unwrap().to_owned();
    let active = client.post(
        &delete,
        &[("csrf", &csrf), ("confirm", "yes"), ("confirm_name", &name)],
    );
    assert_eq!(active.status, 409);
    assert!(
        active.body.contains("Only a suspended mailbox"),
        "{}",
        active.body
    );
    assert!(
        !client
            .get(&format!("/mailboxes/{id}"))
            .body
            .contains("Delete mailbox")
    );
    assert_eq!(
        client
            .post(&status, &[("csrf", &csrf), ("status", "suspended")])
            .status,
        303
    );
    let unnamed = client.post(&delete, &[("csrf", &csrf), ("confirm", "yes")]);
    assert_eq!(unnamed.status, 400);
    assert!(
        unnamed.body.contains("Type the mailbox's name"),
        "{}",
        unnamed.body
    );
    let misnamed = client.post(
        &delete,
        &[
            ("csrf", &csrf),
            ("confirm", "yes"),
            ("confirm_name", "Journal"),
        ],
    );
    assert_eq!(misnamed.status, 400);
    assert!(sb.mailbox_dir(&id).exists());
    // And refused while mail is pending unless that is confirmed too.
    let refused = client.post(&delete, &[("csrf", &csrf), ("confirm_name", &name)]);
    assert_eq!(refused.status, 409);
    assert!(
        refused.body.contains("still holds 1 message"),
        "{}",
        refused.body
    );
    assert!(sb.mailbox_dir(&id).exists());
    // Nor while the archiver is collecting from it.
    let mut collecting = pop3_login(&gw, &id, &new_password).expect("a POP3 session");
    let busy = client.post(
        &delete,
        &[("csrf", &csrf), ("confirm", "yes"), ("confirm_name", &name)],
    );
    assert_eq!(busy.status, 409);
    assert!(
        busy.body.contains("in use by another session"),
        "{}",
        busy.body
    );
    assert!(sb.mailbox_dir(&id).exists());
    collecting.pop3("QUIT");
    // The session lets go of the mailbox as it ends, a moment after its +OK.
    let mut deleted = None;
    support::wait_until("the POP3 session lets go of the mailbox", || {
        let answer = client.post(
            &delete,
            &[("csrf", &csrf), ("confirm", "yes"), ("confirm_name", &name)],
        );
        let done = answer.status != 409;
        deleted = Some(answer);
        done
    });
    let deleted = deleted.unwrap();
    assert_eq!(deleted.header("location"), Some("/?done=deleted"));
    assert!(!sb.mailbox_dir(&id).exists());
    let dashboard = client.get("/?done=deleted");
    assert!(dashboard.body.contains("The mailbox was deleted."));
    assert!(!dashboard.body.contains(&id));
    assert_eq!(client.get(&format!("/mailboxes/{id}")).status, 404);
}

#[test]
fn the_dashboard_shows_pending_mail_and_what_needs_attention() {
    let (sb, gw, mut client) = logged_in("console-dashboard", json!({}));
    let (id, _) = sb.create_mailbox("Waiting");
    deliver(&sb, &id);
    deliver(&sb, &id);
    sb.age_oldest_message(&id, 2 * 86_400);
    let page = client.get("/");
    assert!(page.body.contains("Needs attention"), "{}", page.body);
    assert!(page.body.contains("is the archiver collecting?"));
    assert!(
        page.body.contains("<tr class=\"attention\">"),
        "{}",
        page.body
    );
    assert!(page.body.contains("<td class=\"pending\">2</td>"));
    // The listeners as bound: real ports, not the configured port 0.
    let console = gw.addr("console.listen[0]");
    assert!(
        page.body.contains(&format!(
            "<td>console.listen[0]</td><td>{console}</td><td>serving</td>"
        )),
        "{}",
        page.body
    );
    let mailbox = client.get(&format!("/mailboxes/{id}"));
    let pop3s = gw.addr("pop3.listen_tls[0]").port();
    assert!(
        mailbox
            .body
            .contains(&format!("localhost port {pop3s} (TLS)")),
        "{}",
        mailbox.body
    );
    assert!(page.body.contains("CN=localhost"));
    let cert = client.get("/certificate");
    let out = sb.run(&["cert", "show", "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(cert.body.contains(summary["sha256"].as_str().unwrap()));
    assert!(cert.body.contains(summary["not_after"].as_str().unwrap()));
}

#[test]
fn every_page_escapes_a_hostile_mailbox_name() {
    let (sb, _gw, mut client) = logged_in("console-escape", json!({}));
    let name = "<script>alert(1)</script>";
    let description = "\"><img src=x onerror=alert(2)>";
    let out = sb.run(&[
        "mailbox",
        "create",
        "--name",
        name,
        "--description",
        description,
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let csrf = client.get("/").csrf();
    let pages = [
        client.get("/"),
        client.get(&format!("/mailboxes/{id}")),
        client.post(
            &format!("/mailboxes/{id}/status"),
            &[("csrf", &csrf), ("status", "bogus")],
        ),
        client.post(&format!("/mailboxes/{id}/reset"), &[("csrf", &csrf)]),
        {
            let created = client.post(
                "/mailboxes",
                &[
                    ("csrf", &csrf),
                    ("name", name),
                    ("description", description),
                ],
            );
            client.get(created.header("location").unwrap())
        },
        client.post(
            "/mailboxes",
            &[
                ("csrf", &csrf),
                ("name", &format!("{name}\u{7}")),
                ("description", description),
            ],
        ),
    ];
    for page in &pages {
        assert!(
            page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{}",
            page.body
        );
        assert!(!page.body.contains("<script>alert"), "{}", page.body);
        assert!(!page.body.contains("<img src=x"), "{}", page.body);
    }
}

#[test]
fn nothing_secret_appears_in_urls_or_logs() {
    let (sb, gw, mut client) = console("console-secrets", json!({}));
    let mut pages = vec![
        client.login("Wrong-Password-Entirely-9"),
        client.login(ADMIN),
    ];
    let session = client.cookies["__Host-sealpost"].clone();
    let form = client.get("/mailboxes/new");
    let csrf = form.csrf();
    let redirect = client.post("/mailboxes", &[("csrf", &csrf), ("name", "Secrets")]);
    let created = client.get(redirect.header("location").unwrap());
    let first = created.text_of("password").unwrap();
    let id = id_in(&created);
    let chosen = "Walrus-Lantern-Meadow-Quartz-77";
    pages.push(form);
    pages.push(redirect);
    pages.push(created);
    pages.push(client.post(
        &format!("/mailboxes/{id}/password"),
        &[("csrf", &csrf), ("old", &first), ("new", chosen)],
    ));
    pages.push(client.get(&format!("/mailboxes/{id}?done=password")));
    pages.push(client.post("/logout", &[("csrf", &csrf)]));
    let secrets = [
        ADMIN,
        "Wrong-Password-Entirely-9",
        &first,
        chosen,
        &session,
        &csrf,
    ];
    for page in &pages {
        let mut urls: Vec<&str> = page.headers("location");
        for attr in ["href=\"", "action=\""] {
            urls.extend(
                page.body
                    .split(attr)
                    .skip(1)
                    .map(|s| &s[..s.find('"').unwrap()]),
            );
        }
        for url in urls {
            for secret in secrets {
                assert!(!url.contains(secret), "{url} carries a secret");
            }
        }
    }
    let out = sb.run(&["status"]);
    assert!(stdout(&out).contains("console.listen[0]"));
    gw.wait_for_log("POST /logout 303", Duration::from_secs(5));
    let log = gw.log();
    for secret in secrets {
        assert!(!log.contains(secret), "the log holds a secret: {log}");
    }
    assert!(log.contains(&format!("mailbox {id} created")), "{log}");
}

#[test]
fn malformed_requests_get_clear_http_errors_and_the_console_goes_on() {
    let (_sb, gw, mut client) = console(
        "console-malformed",
        json!({ "limits": { "tls_handshake_timeout_secs": 2 } }),
    );
    let host = client.host();
    let cases: [(Vec<u8>, u16); 5] = [
        (b"hello there\r\n\r\n".to_vec(), 400),
        (format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(), 431),
        (format!("POST /login HTTP/1.1\r\nHost: {host}\r\nContent-Length: 10000000\r\n\r\n").into_bytes(), 413),
        (format!("POST /login HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").into_bytes(), 411),
        (format!("DELETE / HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(), 405),
    ];
    for (request, status) in cases {
        let page = client.raw(&request);
        assert_eq!(
            page.status,
            status,
            "{}",
            String::from_utf8_lossy(&request[..40])
        );
        assert!(page.header("x-frame-options").is_some());
    }
    // Half a request, then silence: answered at the deadline.
    let started = Instant::now();
    let page = client.raw(format!("GET / HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    assert_eq!(page.status, 408);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Plain HTTP on the HTTPS port gets no answer, only a closed connection.
    let mut plain = LineClient::plain(gw.addr("console.listen[0]"));
    plain.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.closed());
    gw.wait_for_log("console 127.0.0.1", Duration::from_secs(5));
    gw.wait_for_log("TLS handshake failed", Duration::from_secs(5));
    assert_eq!(client.get("/login").status, 200);
    assert!(!gw.log().contains("panicked"));
}

#[test]
fn a_certificate_pasted_into_the_console_is_served_at_once_on_every_listener() {
    let (sb, gw, mut client) = logged_in("console-cert", json!({}));
    let ca = support::ca::TestCa::new(&sb.dir, "office");
    let (cert, key) = ca.issue(&sb.dir, "office", &["localhost"]);
    let (_, other_key) = ca.issue(&sb.dir, "other", &["localhost"]);
    let (cert, key, other_key) = (
        std::fs::read_to_string(cert).unwrap(),
        std::fs::read_to_string(key).unwrap(),
        std::fs::read_to_string(other_key).unwrap(),
    );
    let page = client.get("/certificate");
    assert!(page.body.contains("Install a certificate"), "{}", page.body);
    assert!(!page.body.contains("Remove the installed certificate"));
    assert_eq!(
        page.header("strict-transport-security"),
        None,
        "no HSTS over the self-signed certificate"
    );
    let csrf = page.csrf();
    let before = stdout(&sb.run(&["cert", "show", "--json"]));

    let refused = client.post(
        "/certificate",
        &[("csrf", &csrf), ("certificate", &cert), ("key", &other_key)],
    );
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("does not belong to the certificate"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("nothing was changed"));
    assert_eq!(stdout(&sb.run(&["cert", "show", "--json"])), before);

    let installed = client.post(
        "/certificate",
        &[("csrf", &csrf), ("certificate", &cert), ("key", &key)],
    );
    assert_eq!(installed.status, 303, "{}", installed.body);
    assert_eq!(
        installed.header("location"),
        Some("/certificate?done=installed")
    );
    // Served at once, by the console and the mail listeners alike, to
    // clients that trust the office CA; the session goes on.
    let mut trusting = Client::new(gw.addr("console.listen[0]"), &ca.cert_file);
    trusting.cookies = client.cookies.clone();
    let installed = trusting.get("/certificate?done=installed");
    assert!(
        installed.body.contains("Installed: every new connection"),
        "{}",
        installed.body
    );
    // It names the gateway's hostname (localhost): no warning.
    assert!(
        !installed.body.contains("does not name"),
        "{}",
        installed.body
    );
    let page = trusting.get("/certificate");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Remove the installed certificate"));
    assert_eq!(
        page.header("strict-transport-security"),
        Some("max-age=86400"),
        "HSTS while a CA-signed certificate is served"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run(&["cert", "show", "--json"]))).unwrap();
    assert!(
        shown["file"]
            .as_str()
            .unwrap()
            .ends_with("tls/installed.pem")
    );
    assert!(page.body.contains(shown["sha256"].as_str().unwrap()));
    let mut pop3 = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &ca.cert_file);
    assert!(pop3.read_line().unwrap().starts_with("+OK"));
    gw.wait_for_log("console: certificate installed", Duration::from_secs(5));
    assert!(!gw.log().contains("PRIVATE KEY"));

    let removed = trusting.post("/certificate/remove", &[("csrf", &csrf)]);
    assert_eq!(
        removed.header("location"),
        Some("/certificate?done=removed")
    );
    let removed = client.get("/certificate?done=removed");
    assert!(
        removed
            .body
            .contains("self-signed certificate is served again"),
        "{}",
        removed.body
    );
    assert_eq!(removed.header("strict-transport-security"), None);
    assert_eq!(
        Client::new(gw.addr("console.listen[0]"), &gw.cert)
            .get("/login")
            .status,
        200
    );
    assert_eq!(stdout(&sb.run(&["cert", "show", "--json"])), before);
}

/// What `openssl` prints, for the pastes a certificate authority's tools make.
fn openssl(args: &[&str]) {
    let out = support::run(std::process::Command::new("openssl").args(args));
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

#[test]
fn a_bad_paste_is_refused_in_words_and_the_gateway_still_restarts_and_reloads() {
    if support::peer("openssl", &["openssl"]).is_none() {
        return;
    }
    let (sb, gw, mut client) = logged_in("console-pastes", json!({}));
    let ca = support::ca::TestCa::new(&sb.dir, "office");
    let (leaf, key) = ca.issue(&sb.dir, "office", &["localhost"]);
    let (other, other_key) = ca.issue(&sb.dir, "other", &["other.example"]);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    let (leaf_pem, key_pem, other_pem, other_key_pem, ca_pem) = (
        read(&leaf),
        read(&key),
        read(&other),
        read(&other_key),
        read(&ca.cert_file),
    );
    // An X.509 version 1 certificate, and an encrypted key, as openssl makes them.
    let v1_key = sb.dir.join("v1.key");
    let v1_csr = sb.dir.join("v1.csr");
    let v1 = sb.dir.join("v1.pem");
    let s = |p: &std::path::PathBuf| p.to_str().unwrap().to_owned();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &s(&v1_key),
        "-subj",
        "/CN=localhost",
        "-out",
        &s(&v1_csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&v1_csr),
        "-signkey",
        &s(&v1_key),
        "-days",
        "30",
        "-out",
        &s(&v1),
    ]);
    let encrypted = sb.dir.join("encrypted.key");
    openssl(&[
        "pkey",
        "-in",
        &s(&key),
        "-aes256",
        "-passout",
        "pass:secret",
        "-out",
        &s(&encrypted),
    ]);

    let pastes: [(&str, String, String, &str); 6] = [
        (
            "an extra key",
            format!("{leaf_pem}{other_key_pem}"),
            key_pem.clone(),
            "the certificate field holds a private key",
        ),
        (
            "a key in the certificate field",
            key_pem.clone(),
            key_pem.clone(),
            "the certificate field holds a private key",
        ),
        (
            "two leaves",
            format!("{leaf_pem}{other_pem}"),
            key_pem.clone(),
            "holds two server certificates",
        ),
        (
            "a chain in the wrong order",
            format!("{ca_pem}{leaf_pem}"),
            key_pem.clone(),
            "the chain is not in order",
        ),
        (
            "an X.509 v1 certificate",
            read(&v1),
            read(&v1_key),
            "X.509 version 1",
        ),
        (
            "an encrypted key",
            leaf_pem.clone(),
            read(&encrypted),
            "encrypted with a passphrase",
        ),
    ];
    let csrf = client.get("/certificate").csrf();
    for (what, cert, key, why) in &pastes {
        let page = client.post(
            "/certificate",
            &[("csrf", &csrf), ("certificate", cert), ("key", key)],
        );
        assert_eq!(page.status, 400, "{what}: {}", page.body);
        assert!(page.body.contains(why), "{what}: {}", page.body);
        for debug in ["KeyMismatch", "OtherError", "Unsupported"] {
            assert!(
                !page.body.contains(debug),
                "{what}: Rust debug text: {}",
                page.body
            );
        }
        assert!(!sb.data().join("tls/installed.pem").exists(), "{what}");
        let out = sb.run(&["check-config"]);
        assert!(out.status.success(), "{what}: {}", stderr(&out));
    }

    // A good chain with stray text around it: what is written is exactly
    // the chain and its key, and the next start and every reload load it.
    let paste = format!("Bag Attributes\n{leaf_pem}\n{ca_pem}trailing words\n");
    let installed = client.post(
        "/certificate",
        &[("csrf", &csrf), ("certificate", &paste), ("key", &key_pem)],
    );
    assert_eq!(installed.status, 303, "{}", installed.body);
    let written = read(&sb.data().join("tls/installed.pem"));
    assert_eq!(written.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert_eq!(written.matches("PRIVATE KEY-----").count(), 2, "one key");
    // Phrases with spaces: base64 may hold "Bag" by chance, never a space.
    assert!(!written.contains("Bag Attributes") && !written.contains("trailing words"));
    let out = sb.run(&["check-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("installed.pem"), "{}", stderr(&out));
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("configuration reloaded", Duration::from_secs(10));
    assert!(gw.stop().success());
    let gw = Gateway::start(&sb);
    let mut pop3 = LineClient::implicit_tls(gw.addr("pop3.listen_tls[0]"), &ca.cert_file);
    assert!(pop3.read_line().unwrap().starts_with("+OK"));

    // A certificate that does not name the hostname is a warning, not success.
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(sb.config()).unwrap()).unwrap();
    config["hostname"] = json!("gw.example");
    std::fs::write(sb.config(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_for_log("configuration reloaded", Duration::from_secs(10));
    let mut trusting = Client::new(gw.addr("console.listen[0]"), &ca.cert_file);
    assert_eq!(trusting.login(ADMIN).status, 303);
    let shown = trusting.get("/certificate");
    assert!(
        shown.body.contains("class=\"warning\"") && shown.body.contains("does not name gw.example"),
        "{}",
        shown.body
    );

    // The file a broken paste used to leave (a certificate, then two keys):
    // check-config now fails exactly where serve does.
    let dir = sb.data().join("tls");
    std::fs::write(
        dir.join("installed.pem"),
        format!("{leaf_pem}{other_key_pem}{key_pem}"),
    )
    .unwrap();
    let out = sb.run(&["check-config"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("serve would fail"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("does not belong to the certificate"),
        "{}",
        stderr(&out)
    );
    drop(gw);
}
