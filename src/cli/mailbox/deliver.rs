//! `mailbox deliver`: one message from standard input (a Postfix pipe transport).

use super::*;
use crate::store::{Spool, Store};

pub(super) fn deliver(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "deliver",
        "ID [--from ADDR] < message\n\nStores one message read from standard input (LF or CRLF line endings).\nExit codes for a Postfix pipe transport: 65 empty message, 67 no such mailbox,\n75 try later.",
        args,
        |o| {
            o.optopt(
                "",
                "from",
                "envelope sender recorded in the metadata",
                "ADDR",
            );
        },
    )?
    else {
        return Ok(());
    };
    // A recipient that is not even a mailbox id is "no such user" to Postfix.
    let id = one_id("deliver", &m).map_err(|e| CliError {
        code: if m.free.len() == 1 { EX_NOUSER } else { e.code },
        message: e.message,
    })?;
    let (config, store) = context.open().map_err(|e| CliError {
        code: EX_TEMPFAIL,
        message: e.message,
    })?;
    let mailbox = store.mailbox(&id).map_err(|e| match e {
        StoreError::NotFound(_) => CliError {
            code: EX_NOUSER,
            message: e.to_string(),
        },
        other => temporary(&other),
    })?;
    if mailbox.info().status == Status::Suspended {
        mailbox.note_refused_delivery();
        return Err(CliError {
            code: EX_TEMPFAIL,
            message: format!("mailbox {id} is suspended and does not take new mail"),
        });
    }
    let l = &config.limits;
    if let Ok(space) =
        crate::store::reserve::measure(&config.data_dir, l.min_free_bytes, l.min_free_percent)
        && space.below()
    {
        return Err(CliError {
            code: EX_TEMPFAIL,
            message: format!(
                "the disk is below its reserve ({} free, {} kept): try again later",
                crate::store::reserve::human(space.free),
                crate::store::reserve::human(space.reserve)
            ),
        });
    }
    let spool = read_message(&store)?;
    let metadata = Metadata {
        received: timestamp::rfc3339(SystemTime::now()),
        source: Source::Cli,
        mail_from: m.opt_str("from").unwrap_or_default(),
        rcpt_to: vec![address(&config, &id)],
        client_ip: None,
        tls: None,
        size: spool.size(),
        upstream: None,
    };
    let names = store
        .deliver(&spool, &[(&mailbox, metadata)])
        .map_err(|e| temporary(&e))?;
    for name in names {
        outln!(
            "Stored message {name} ({} bytes) in mailbox {id}.",
            spool.size()
        );
    }
    Ok(())
}

/// A failure Postfix should retry (`EX_TEMPFAIL`).
fn temporary(e: &dyn std::fmt::Display) -> CliError {
    CliError {
        code: EX_TEMPFAIL,
        message: e.to_string(),
    }
}

/// Standard input into the encrypted spool, line ends made CRLF; an empty
/// message is `EX_DATAERR`.
fn read_message(store: &Store) -> Result<Spool, CliError> {
    let cannot_store = |e: &dyn std::fmt::Display| CliError {
        code: EX_TEMPFAIL,
        message: format!("cannot store the message: {e}"),
    };
    let spool = store.spool().map_err(|e| temporary(&e))?;
    let mut writer = CrlfWriter::new(spool);
    io::copy(&mut io::stdin().lock(), &mut writer).map_err(|e| cannot_store(&e))?;
    let spool = writer
        .finish()
        .map_err(|e| cannot_store(&e))?
        .finish()
        .map_err(|e| cannot_store(&e))?;
    if spool.size() == 0 {
        return Err(CliError {
            code: EX_DATAERR,
            message: "the message is empty: nothing was read from standard input".into(),
        });
    }
    Ok(spool)
}
