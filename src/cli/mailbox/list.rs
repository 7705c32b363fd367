//! `mailbox list` and `mailbox show`.

use super::*;

fn newest_text(stats: &crate::store::MailboxStats) -> String {
    stats
        .newest
        .map(timestamp::rfc3339)
        .unwrap_or_else(|| "-".into())
}

fn mailbox_json(config: &Config, mailbox: &Mailbox) -> Result<serde_json::Value, StoreError> {
    let info = mailbox.info();
    let stats = mailbox.stats()?;
    Ok(json!({
        "id": info.id.as_str(),
        "address": address(config, &info.id),
        "name": info.name,
        "description": info.description,
        "status": info.status.as_str(),
        "created": info.created,
        "messages": stats.messages,
        "bytes": stats.bytes,
        "newest": stats.newest.map(timestamp::rfc3339),
        "oldest": stats.oldest.map(timestamp::rfc3339),
        "last_retrieved": stats.last_retrieved.map(timestamp::rfc3339),
        "public_only": mailbox.is_public_only(),
    }))
}

pub(super) fn list(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "list",
        "[--json]\n\nLists every mailbox.",
        args,
        |o| {
            o.optflag("", "json", "print JSON");
        },
    )?
    else {
        return Ok(());
    };
    no_positional("list", &m)?;
    let (config, store) = context.open()?;
    let mut rows = Vec::new();
    let mut broken = Vec::new();
    for id in store.mailbox_ids()? {
        match store.mailbox(&id).and_then(|mb| mailbox_json(&config, &mb)) {
            Ok(row) => rows.push(row),
            Err(e) => broken.push(e.to_string()),
        }
    }
    if m.opt_present("json") {
        print_json(&json!(rows));
    } else if rows.is_empty() && broken.is_empty() {
        outln!("No mailboxes. Create one with: sealpost mailbox create --name NAME");
    } else {
        outln!(
            "{:<36}  {:<9}  {:>8}  {:>12}  {:<20}  {:<20}  ADDRESS",
            "ID",
            "STATUS",
            "MESSAGES",
            "BYTES",
            "NEWEST",
            "NAME"
        );
        for row in &rows {
            outln!(
                "{:<36}  {:<9}  {:>8}  {:>12}  {:<20}  {:<20}  {}",
                row["id"].as_str().unwrap_or(""),
                row["status"].as_str().unwrap_or(""),
                row["messages"].as_u64().unwrap_or(0),
                row["bytes"].as_u64().unwrap_or(0),
                row["newest"].as_str().unwrap_or("-"),
                row["name"].as_str().unwrap_or(""),
                row["address"].as_str().unwrap_or(""),
            );
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(broken.join("\n")))
    }
}

pub(super) fn show(context: &Context, args: &[String]) -> Result<(), CliError> {
    let Some((context, m)) = options(
        context,
        "show",
        "ID [--json]\n\nShows one mailbox.",
        args,
        |o| {
            o.optflag("", "json", "print JSON");
        },
    )?
    else {
        return Ok(());
    };
    let id = one_id("show", &m)?;
    let (config, store) = context.open()?;
    let mailbox = store.mailbox(&id)?;
    let wrapped = match mailbox.wrapped_key() {
        Ok(wrapped) => Some(wrapped),
        Err(StoreError::PublicOnly(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut out = mailbox_json(&config, &mailbox)?;
    out["public_key"] = json!(crypto::base64_encode(mailbox.info().public_key.as_bytes()));
    out["kdf"] = json!(wrapped.as_ref().map(|w| {
        json!({ "opslimit": w.params.opslimit, "memlimit_bytes": w.params.memlimit })
    }));
    if m.opt_present("json") {
        print_json(&out);
        return Ok(());
    }
    let stats = mailbox.stats()?;
    let info = mailbox.info();
    outln!("id:          {}", info.id);
    outln!("address:     {}", address(&config, &info.id));
    outln!("name:        {}", info.name);
    outln!("description: {}", info.description);
    outln!("status:      {}", info.status.as_str());
    outln!("created:     {}", info.created);
    outln!(
        "messages:    {} ({} bytes on disk)",
        stats.messages,
        stats.bytes
    );
    outln!("newest:      {}", newest_text(&stats));
    outln!("public key:  {}", out["public_key"].as_str().unwrap_or(""));
    match wrapped {
        Some(w) => outln!(
            "key wrap:    argon2id13, opslimit {}, memlimit {} bytes",
            w.params.opslimit,
            w.params.memlimit
        ),
        None => outln!(
            "key wrap:    none: a standby copy, public key only (mail is stored, never read here)"
        ),
    }
    Ok(())
}
