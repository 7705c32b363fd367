//! The two listings a login fetches once: UIDL ties message numbers to the
//! ids the archive index is keyed by, LIST gives the sizes the limit is
//! checked on. Both are bounded, in bytes and in line length.

use super::*;

/// Most bytes of a UIDL or LIST answer read at login (about 200,000
/// messages): an upstream cannot make the proxy hold more.
const MAX_LISTING_BYTES: usize = 16 << 20;
/// Longest line of such an answer (RFC 1939 section 7: a UIDL is at most 70
/// characters; answers are at most 512 octets).
const MAX_LISTING_LINE: usize = 1024;

impl<R: Relay> Pop3Proxy<R> {
    /// Asks for one of the listings of the login: one UIDL ties message
    /// numbers to the ids the archive index is keyed by; one LIST gives the
    /// sizes the limit is checked on.
    pub(super) fn list(&mut self, tx: Tx, command: &'static str, out: &mut Replies) -> Step {
        match tx.link.command(command) {
            Ok(request) => {
                self.state = State::Listing(Box::new(Listing {
                    tx,
                    command,
                    receiver: None,
                    bytes: Vec::new(),
                }));
                Step::Upstream(request)
            }
            Err(e) => self.lost(&e, out),
        }
    }

    pub(super) fn listing(
        &mut self,
        mut l: Box<Listing>,
        response: Response<'_>,
        out: &mut Replies,
    ) -> Step {
        let read = match &mut l.receiver {
            None => match l.tx.link.status(response) {
                Err(e) => return self.lost(&e, out),
                Ok(Progress::Io(request)) => {
                    self.state = State::Listing(l);
                    return Step::Upstream(request);
                }
                // Refused: no listing (an upstream without UIDL).
                Ok(Progress::Done(status)) if !status.ok => Ok(None),
                Ok(Progress::Done(_)) => {
                    l.receiver = Some(DataReceiver::normalizing());
                    read_listing(&mut l, None)
                }
            },
            Some(_) => read_listing(&mut l, Some(response)),
        };
        let entries = match read {
            Err(e) => {
                warn!(
                    "pop3 proxy: {} from {} failed: {e}",
                    l.command, l.tx.account.server
                );
                return self.lost(&e, out);
            }
            Ok(None) if l.receiver.is_some() => {
                let read = l.tx.link.read();
                self.state = State::Listing(l);
                return Step::Upstream(read);
            }
            Ok(entries) => entries,
        };
        let Listing {
            mut tx, command, ..
        } = *l;
        if command == "UIDL" {
            if entries.is_none() {
                warn!(
                    "pop3 proxy: {} offers no UIDL; copies cannot be matched across sessions",
                    tx.account.server
                );
            }
            tx.uidls = entries.map(|list| list.into_iter().collect());
            return self.list(tx, "LIST", out);
        }
        tx.sizes = entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(n, size)| Some((n, size.parse().ok()?)))
            .collect();
        self.state = State::Transaction(Box::new(tx));
        ok(out, "Logged in");
        Step::Continue
    }
}

/// Reads a UIDL or LIST body into (message number, value) pairs: `Ok(None)`
/// while it goes on; bounded in size and line length; a line that is not
/// `number value` is an error.
fn read_listing(
    l: &mut Listing,
    response: Option<Response<'_>>,
) -> Result<Option<Vec<(u64, String)>>, Broken> {
    let Some(receiver) = &mut l.receiver else {
        return Ok(None);
    };
    let end = l.tx.link.body(response, receiver, &mut l.bytes)?;
    if l.bytes.len() > MAX_LISTING_BYTES {
        return Err(Broken(format!(
            "the {} answer is larger than {MAX_LISTING_BYTES} bytes",
            l.command
        )));
    }
    if !end {
        return Ok(None);
    }
    let mut entries = Vec::new();
    for line in l.bytes.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let parsed = (line.len() <= MAX_LISTING_LINE)
            .then(|| std::str::from_utf8(line).ok())
            .flatten()
            .and_then(|text| {
                let mut words = text.split_ascii_whitespace();
                let number = words.next()?.parse::<u64>().ok()?;
                let value = words.next()?;
                let printable = value.bytes().all(|b| b.is_ascii_graphic());
                (printable && words.next().is_none()).then(|| (number, value.to_string()))
            });
        match parsed {
            Some(entry) => entries.push(entry),
            None => {
                return Err(Broken(format!(
                    "a malformed {} line: {:?}",
                    l.command,
                    String::from_utf8_lossy(&line[..line.len().min(80)])
                )));
            }
        }
    }
    Ok(Some(entries))
}
