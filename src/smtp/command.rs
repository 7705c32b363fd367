//! SMTP command lines to commands (RFC 5321 section 4.1, with the parameters
//! of SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531) and CHUNKING
//! (RFC 3030)). Verbs and parameter names are case-insensitive.

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`
    Ehlo(String),
    /// `HELO domain`
    Helo(String),
    /// `MAIL FROM:<path> [params]`
    Mail(Path, MailParams),
    /// `RCPT TO:<path>`
    Rcpt(Path),
    /// `DATA`
    Data,
    /// `BDAT size [LAST]`
    Bdat {
        /// Bytes of the chunk that follows the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [text]`
    Noop,
    /// `VRFY string`
    Vrfy,
    /// `EXPN string`
    Expn,
    /// `HELP [topic]`
    Help,
    /// `QUIT`
    Quit,
    /// `STARTTLS`
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954)
    Auth {
        /// The SASL mechanism, uppercased.
        mechanism: String,
        /// The initial response, if given (`=` is an empty one).
        initial: Option<String>,
    },
}

/// An envelope address as written between the angle brackets, with any
/// source route removed. Empty for the null reverse-path `<>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub String);

impl Path {
    /// Whether the address has bytes outside ASCII (needs SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }

    /// The local part and the domain, split at the last `@`.
    pub fn split(&self) -> Option<(&str, &str)> {
        self.0.rsplit_once('@')
    }
}

/// `BODY=` values (RFC 6152); BINARYMIME is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Body {
    /// `7BIT` or no BODY parameter.
    #[default]
    SevenBit,
    /// `8BITMIME`
    EightBitMime,
}

/// Parameters of MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=n`: the declared message size.
    pub size: Option<u64>,
    /// `BODY=`
    pub body: Body,
    /// `SMTPUTF8`
    pub smtputf8: bool,
}

/// Whose address is meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The reverse-path of MAIL FROM.
    Sender,
    /// A forward-path of RCPT TO.
    Recipient,
}

/// Why a line is not a valid command, and so which reply it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb (500 5.5.2).
    Unrecognized,
    /// Not UTF-8 or contains control characters (500 5.5.2).
    BadCharacters,
    /// Wrong arguments; the text is the usage (501 5.5.4).
    Syntax(&'static str),
    /// A malformed address: 501 5.1.7 for senders, 5.1.3 for recipients
    /// (RFC 3463 section 3.2).
    BadAddress(Party, String),
    /// A parameter we do not support (555 5.5.4).
    UnsupportedParameter(String),
}

/// Parses one command line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadCharacters)?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::BadCharacters);
    }
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, rest) = match line.split_once([' ', '\t']) {
        Some((verb, rest)) => (verb, rest.trim_start_matches([' ', '\t'])),
        None => (line, ""),
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => Ok(Command::Ehlo(client_name(rest, "EHLO domain")?)),
        "HELO" => Ok(Command::Helo(client_name(rest, "HELO domain")?)),
        "MAIL" => {
            let rest = strip_prefix_ci(rest, "FROM:")
                .ok_or(CommandError::Syntax("MAIL FROM:<address> [parameters]"))?;
            let (path, params) = split_path(rest, Party::Sender)?;
            Ok(Command::Mail(path, mail_params(params)?))
        }
        "RCPT" => {
            let rest =
                strip_prefix_ci(rest, "TO:").ok_or(CommandError::Syntax("RCPT TO:<address>"))?;
            let (path, params) = split_path(rest, Party::Recipient)?;
            if let Some(p) = params.split_whitespace().next() {
                return Err(CommandError::UnsupportedParameter(p.to_string()));
            }
            Ok(Command::Rcpt(path))
        }
        "DATA" => no_arguments(rest, Command::Data, "DATA"),
        "BDAT" => bdat(rest),
        "RSET" => no_arguments(rest, Command::Rset, "RSET"),
        "QUIT" => no_arguments(rest, Command::Quit, "QUIT"),
        "STARTTLS" => no_arguments(rest, Command::StartTls, "STARTTLS"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        "VRFY" if !rest.is_empty() => Ok(Command::Vrfy),
        "VRFY" => Err(CommandError::Syntax("VRFY string")),
        "EXPN" if !rest.is_empty() => Ok(Command::Expn),
        "EXPN" => Err(CommandError::Syntax("EXPN string")),
        "AUTH" => {
            let mut words = rest.split_whitespace();
            let mechanism = words
                .next()
                .ok_or(CommandError::Syntax("AUTH mechanism [initial-response]"))?;
            let initial = words.next().map(str::to_string);
            if words.next().is_some() {
                return Err(CommandError::Syntax("AUTH mechanism [initial-response]"));
            }
            Ok(Command::Auth {
                mechanism: mechanism.to_ascii_uppercase(),
                initial,
            })
        }
        _ => Err(CommandError::Unrecognized),
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| text[prefix.len()..].trim_start_matches([' ', '\t']))
}

fn no_arguments(
    rest: &str,
    command: Command,
    usage: &'static str,
) -> Result<Command, CommandError> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax(usage))
    }
}

/// The EHLO/HELO argument: a domain or address literal. It ends up in the
/// `Received:` header, so only characters that cannot break that header pass.
fn client_name(rest: &str, usage: &'static str) -> Result<String, CommandError> {
    let name = rest
        .split_whitespace()
        .next()
        .ok_or(CommandError::Syntax(usage))?;
    let ok = name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:[]".contains(&b));
    if ok {
        Ok(name.to_string())
    } else {
        Err(CommandError::Syntax(usage))
    }
}

fn bdat(rest: &str) -> Result<Command, CommandError> {
    const USAGE: &str = "BDAT size [LAST]";
    let mut words = rest.split_whitespace();
    let size = words
        .next()
        .filter(|w| !w.is_empty() && w.len() <= 19 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u64>().ok())
        .ok_or(CommandError::Syntax(USAGE))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax(USAGE)),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax(USAGE));
    }
    Ok(Command::Bdat { size, last })
}

/// Splits `<path> params` and validates the path. Angle brackets are required
/// by RFC 5321 but a bare address without spaces is accepted, as Postfix does.
/// Only a sender may be the null path `<>`.
fn split_path(text: &str, party: Party) -> Result<(Path, &str), CommandError> {
    let bad = |why: &str| CommandError::BadAddress(party, why.to_string());
    let (inner, rest) = if let Some(after) = text.strip_prefix('<') {
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '>' if !in_quotes => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let end = end.ok_or_else(|| bad("missing closing '>'"))?;
        let rest = &after[end + 1..];
        if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
            return Err(bad("text directly after '>'"));
        }
        (&after[..end], rest.trim_start_matches([' ', '\t']))
    } else {
        let end = text.find([' ', '\t']).unwrap_or(text.len());
        if end == 0 {
            return Err(bad("no address given"));
        }
        (&text[..end], text[end..].trim_start_matches([' ', '\t']))
    };
    if inner.is_empty() {
        return match party {
            Party::Sender => Ok((Path(String::new()), rest)),
            Party::Recipient => Err(bad("the null address <> is not a recipient")),
        };
    }
    // RFC 5321 section 4.1.1.3 and appendix C: accept and ignore a source route.
    let mailbox = match inner.strip_prefix('@') {
        Some(route) => route
            .split_once(':')
            .map(|(_, m)| m)
            .ok_or_else(|| bad("malformed source route"))?,
        None => inner,
    };
    check_mailbox(mailbox).map_err(bad)?;
    Ok((Path(mailbox.to_string()), rest))
}

/// `local-part@domain` with a dot-string or quoted-string local part.
fn check_mailbox(mailbox: &str) -> Result<(), &'static str> {
    let (local, domain) = if let Some(quoted) = mailbox.strip_prefix('"') {
        let mut escaped = false;
        let mut close = None;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or("unterminated quoted local part")?;
        let after = &quoted[close + 1..];
        let domain = after
            .strip_prefix('@')
            .ok_or("missing '@' after the quoted local part")?;
        (&mailbox[..close + 2], domain)
    } else {
        let (local, domain) = mailbox.rsplit_once('@').ok_or("missing '@'")?;
        if local.is_empty()
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err("malformed local part");
        }
        let atext = |c: char| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c)
        };
        if !local.chars().all(atext) {
            return Err("malformed local part");
        }
        (local, domain)
    };
    if local.is_empty() || domain.is_empty() {
        return Err("empty local part or domain");
    }
    let domain_ok = if domain.starts_with('[') {
        domain.ends_with(']')
            && domain.len() > 2
            && !domain[1..domain.len() - 1].contains(['[', ']', '\\'])
    } else {
        domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || c == '-')
        })
    };
    if domain_ok {
        Ok(())
    } else {
        Err("malformed domain")
    }
}

fn mail_params(text: &str) -> Result<MailParams, CommandError> {
    let mut params = MailParams::default();
    let (mut seen_size, mut seen_body) = (false, false);
    for word in text.split_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key.to_ascii_uppercase().as_str(), value) {
            ("SIZE", Some(v)) if !seen_size => {
                seen_size = true;
                let size = v
                    .parse::<u64>()
                    .ok()
                    .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(CommandError::Syntax("SIZE=<number of bytes>"))?;
                params.size = Some(size);
            }
            ("BODY", Some(v)) if !seen_body => {
                seen_body = true;
                params.body = match v.to_ascii_uppercase().as_str() {
                    "7BIT" => Body::SevenBit,
                    "8BITMIME" => Body::EightBitMime,
                    _ => return Err(CommandError::UnsupportedParameter(word.to_string())),
                };
            }
            ("SMTPUTF8", None) if !params.smtputf8 => params.smtputf8 = true,
            ("SIZE" | "BODY" | "SMTPUTF8", _) => {
                return Err(CommandError::Syntax(
                    "MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]",
                ));
            }
            _ => return Err(CommandError::UnsupportedParameter(word.to_string())),
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, CommandError> {
        parse(line.as_bytes())
    }

    fn path(s: &str) -> Path {
        Path(s.to_string())
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(
            p("ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(p("QuIt"), Ok(Command::Quit));
        assert_eq!(p("data"), Ok(Command::Data));
        assert_eq!(p("starttls"), Ok(Command::StartTls));
    }

    #[test]
    fn mail_from_accepts_parameters_in_any_case_and_spacing() {
        assert_eq!(
            p("MAIL FROM:<a@example.com> SIZE=1000 BODY=8BITMIME SMTPUTF8"),
            Ok(Command::Mail(
                path("a@example.com"),
                MailParams {
                    size: Some(1000),
                    body: Body::EightBitMime,
                    smtputf8: true
                }
            ))
        );
        assert_eq!(
            p("mail from: <a@example.com>  size=5  body=7bit"),
            Ok(Command::Mail(
                path("a@example.com"),
                MailParams {
                    size: Some(5),
                    ..Default::default()
                }
            ))
        );
        assert_eq!(
            p("MAIL FROM:<>"),
            Ok(Command::Mail(path(""), MailParams::default()))
        );
    }

    #[test]
    fn a_source_route_is_accepted_and_ignored() {
        assert_eq!(
            p("RCPT TO:<@relay.example,@other.example:user@example.com>"),
            Ok(Command::Rcpt(path("user@example.com")))
        );
    }

    #[test]
    fn quoted_local_parts_may_hold_spaces_and_brackets() {
        assert_eq!(
            p("MAIL FROM:<\"odd > name\"@example.com>").map(|c| matches!(c, Command::Mail(..))),
            Ok(true)
        );
    }

    #[test]
    fn utf8_addresses_parse_and_report_non_ascii() {
        let Ok(Command::Mail(from, params)) = p("MAIL FROM:<jürgen@bücher.example> SMTPUTF8")
        else {
            panic!()
        };
        assert!(!from.is_ascii());
        assert!(params.smtputf8);
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for line in [
            "MAIL FROM:<a@example.com",
            "MAIL FROM:<a@>",
            "MAIL FROM:<@example.com>",
            "MAIL FROM:<a..b@example.com>",
            "MAIL FROM:<a b@example.com>",
            "MAIL FROM:<a@exa mple.com>",
            "MAIL FROM:<a@example.com>x",
            "RCPT TO:<>",
            "RCPT TO:<noatsign>",
        ] {
            assert!(
                matches!(p(line), Err(CommandError::BadAddress(..))),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_or_unoffered_parameters_are_555() {
        assert_eq!(
            p("MAIL FROM:<a@b.c> BODY=BINARYMIME"),
            Err(CommandError::UnsupportedParameter("BODY=BINARYMIME".into()))
        );
        assert_eq!(
            p("MAIL FROM:<a@b.c> RET=HDRS"),
            Err(CommandError::UnsupportedParameter("RET=HDRS".into()))
        );
        assert_eq!(
            p("RCPT TO:<a@b.c> NOTIFY=NEVER"),
            Err(CommandError::UnsupportedParameter("NOTIFY=NEVER".into()))
        );
    }

    #[test]
    fn bad_or_repeated_parameters_are_syntax_errors() {
        assert!(matches!(
            p("MAIL FROM:<a@b.c> SIZE=abc"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.c> SIZE=-1"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.c> SIZE=1 SIZE=2"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.c> SMTPUTF8=yes"),
            Err(CommandError::Syntax(_))
        ));
        assert!(matches!(p("MAIL TO:<a@b.c>"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn bdat_takes_a_size_and_optional_last() {
        assert_eq!(
            p("BDAT 0 LAST"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
        assert_eq!(
            p("bdat 1234"),
            Ok(Command::Bdat {
                size: 1234,
                last: false
            })
        );
        assert_eq!(
            p("BDAT 5 last"),
            Ok(Command::Bdat {
                size: 5,
                last: true
            })
        );
        for bad in [
            "BDAT",
            "BDAT x",
            "BDAT -1",
            "BDAT 5 FIRST",
            "BDAT 5 LAST more",
            "BDAT 99999999999999999999",
        ] {
            assert!(matches!(p(bad), Err(CommandError::Syntax(_))), "{bad}");
        }
    }

    #[test]
    fn commands_without_arguments_refuse_them() {
        assert!(matches!(p("DATA now"), Err(CommandError::Syntax(_))));
        assert!(matches!(p("STARTTLS please"), Err(CommandError::Syntax(_))));
        assert_eq!(p("NOOP anything goes"), Ok(Command::Noop));
        assert!(matches!(p("VRFY"), Err(CommandError::Syntax(_))));
        assert_eq!(p("VRFY postmaster"), Ok(Command::Vrfy));
    }

    #[test]
    fn ehlo_needs_a_safe_name() {
        assert!(matches!(p("EHLO"), Err(CommandError::Syntax(_))));
        assert_eq!(
            p("EHLO [192.0.2.1]"),
            Ok(Command::Ehlo("[192.0.2.1]".into()))
        );
        assert!(matches!(
            p("EHLO evil(\"injected\")"),
            Err(CommandError::Syntax(_))
        ));
    }

    #[test]
    fn garbage_is_unrecognized_and_binary_is_refused() {
        assert_eq!(p("FROBNICATE"), Err(CommandError::Unrecognized));
        assert_eq!(p(""), Err(CommandError::Unrecognized));
        assert_eq!(parse(b"NOOP \xff"), Err(CommandError::BadCharacters));
        assert_eq!(parse(b"NOOP \x00"), Err(CommandError::BadCharacters));
    }

    #[test]
    fn auth_takes_a_mechanism_and_an_initial_response() {
        assert_eq!(
            p("auth plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            })
        );
        assert_eq!(
            p("AUTH LOGIN"),
            Ok(Command::Auth {
                mechanism: "LOGIN".into(),
                initial: None
            })
        );
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(line in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&line);
        }

        #[test]
        fn every_verb_with_arbitrary_arguments_parses_or_is_refused(
            verb in prop::sample::select(vec!["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "QUIT", "STARTTLS", "AUTH"]),
            args in "[ -~\\t\\x00\\x7f\\u{80}-\\u{10ffff}]{0,80}",
        ) {
            // Never a panic, and the verb's case never matters (RFC 5321
            // §2.4, RFC 1939 §3): the same arguments give the same result.
            let upper = parse(format!("{verb} {args}").as_bytes());
            let lower = parse(format!("{} {args}", verb.to_lowercase()).as_bytes());
            prop_assert_eq!(&upper, &lower);
        }
    }
}
