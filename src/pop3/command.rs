//! POP3 command lines to commands (RFC 1939 section 3; CAPA and response
//! codes from RFC 2449, STLS from RFC 2595, AUTH from RFC 5034).

/// A parsed command. Message numbers are as the client wrote them (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `CAPA`
    Capa,
    /// `STLS`
    Stls,
    /// `USER name`
    User(String),
    /// `PASS string` (the rest of the line, spaces included)
    Pass(String),
    /// `AUTH [mechanism [initial-response]]`
    Auth {
        /// The mechanism, uppercased; `None` asks for the list.
        mechanism: Option<String>,
        /// The initial response (`=` stands for an empty one).
        initial: Option<String>,
    },
    /// `APOP name digest` (not offered)
    Apop,
    /// `STAT`
    Stat,
    /// `LIST [msg]`
    List(Option<u64>),
    /// `UIDL [msg]`
    Uidl(Option<u64>),
    /// `RETR msg`
    Retr(u64),
    /// `TOP msg lines`
    Top(u64, u64),
    /// `DELE msg`
    Dele(u64),
    /// `RSET`
    Rset,
    /// `NOOP`
    Noop,
    /// `QUIT`
    Quit,
}

/// Why a line is not a valid command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown keyword.
    Unknown,
    /// Not UTF-8, or control characters.
    BadCharacters,
    /// Wrong arguments; the text is the usage.
    Syntax(&'static str),
}

fn number(word: Option<&str>, usage: &'static str) -> Result<u64, CommandError> {
    word.filter(|w| !w.is_empty() && w.len() <= 19 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse().ok())
        .ok_or(CommandError::Syntax(usage))
}

fn optional_number(words: &[&str], usage: &'static str) -> Result<Option<u64>, CommandError> {
    match words {
        [] => Ok(None),
        [n] => number(Some(n), usage).map(Some),
        _ => Err(CommandError::Syntax(usage)),
    }
}

/// Parses one command line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::BadCharacters)?;
    let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
    // A user name or password with a control character is not a syntax
    // error: the login refuses it with the same answer as a wrong password,
    // so a client learns nothing from the difference.
    let credential = keyword.eq_ignore_ascii_case("USER") || keyword.eq_ignore_ascii_case("PASS");
    if !credential && line.chars().any(|c| c.is_control()) {
        return Err(CommandError::BadCharacters);
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    let none = |command: Command, usage: &'static str| {
        if words.is_empty() {
            Ok(command)
        } else {
            Err(CommandError::Syntax(usage))
        }
    };
    match keyword.to_ascii_uppercase().as_str() {
        "CAPA" => none(Command::Capa, "CAPA"),
        "STLS" => none(Command::Stls, "STLS"),
        "STAT" => none(Command::Stat, "STAT"),
        "RSET" => none(Command::Rset, "RSET"),
        "NOOP" => none(Command::Noop, "NOOP"),
        "QUIT" => none(Command::Quit, "QUIT"),
        "USER" => match rest
            .split(' ')
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()[..]
        {
            [name] => Ok(Command::User(name.to_string())),
            _ => Err(CommandError::Syntax("USER name")),
        },
        // RFC 1939 section 7: the password may contain spaces.
        "PASS" if !rest.is_empty() => Ok(Command::Pass(rest.to_string())),
        "PASS" => Err(CommandError::Syntax("PASS password")),
        "AUTH" => match words.as_slice() {
            [] => Ok(Command::Auth {
                mechanism: None,
                initial: None,
            }),
            [m] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: None,
            }),
            [m, initial] => Ok(Command::Auth {
                mechanism: Some(m.to_ascii_uppercase()),
                initial: Some(initial.to_string()),
            }),
            _ => Err(CommandError::Syntax("AUTH mechanism [initial-response]")),
        },
        "APOP" => Ok(Command::Apop),
        "LIST" => optional_number(&words, "LIST [message]").map(Command::List),
        "UIDL" => optional_number(&words, "UIDL [message]").map(Command::Uidl),
        "RETR" => match words.as_slice() {
            [n] => number(Some(n), "RETR message").map(Command::Retr),
            _ => Err(CommandError::Syntax("RETR message")),
        },
        "DELE" => match words.as_slice() {
            [n] => number(Some(n), "DELE message").map(Command::Dele),
            _ => Err(CommandError::Syntax("DELE message")),
        },
        "TOP" => match words.as_slice() {
            [n, lines] => Ok(Command::Top(
                number(Some(n), "TOP message lines")?,
                number(Some(lines), "TOP message lines")?,
            )),
            _ => Err(CommandError::Syntax("TOP message lines")),
        },
        _ => Err(CommandError::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::line::{Line, LineAssembler};

    fn p(s: &str) -> Result<Command, CommandError> {
        parse(s.as_bytes())
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(p("capa"), Ok(Command::Capa));
        assert_eq!(p("Stat"), Ok(Command::Stat));
        assert_eq!(p("retr 3"), Ok(Command::Retr(3)));
        assert_eq!(p("top 1 0"), Ok(Command::Top(1, 0)));
    }

    #[test]
    fn the_password_is_the_whole_rest_of_the_line() {
        assert_eq!(
            p("PASS two words  and spaces "),
            Ok(Command::Pass("two words  and spaces ".into()))
        );
        assert!(matches!(p("PASS"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn message_numbers_must_be_numbers() {
        for bad in [
            "RETR", "RETR x", "RETR -1", "RETR 1 2", "TOP 1", "TOP 1 x", "LIST 1 2", "DELE",
            "UIDL a",
        ] {
            assert!(matches!(p(bad), Err(CommandError::Syntax(_))), "{bad}");
        }
        assert_eq!(p("LIST"), Ok(Command::List(None)));
        assert_eq!(p("UIDL 7"), Ok(Command::Uidl(Some(7))));
        assert_eq!(p("RETR 0"), Ok(Command::Retr(0)));
    }

    #[test]
    fn auth_with_and_without_initial_response() {
        assert_eq!(
            p("AUTH"),
            Ok(Command::Auth {
                mechanism: None,
                initial: None
            })
        );
        assert_eq!(
            p("auth plain"),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: None
            })
        );
        assert_eq!(
            p("AUTH PLAIN AHVzZXIAcGFzcw=="),
            Ok(Command::Auth {
                mechanism: Some("PLAIN".into()),
                initial: Some("AHVzZXIAcGFzcw==".into())
            })
        );
    }

    #[test]
    fn unknown_and_binary_lines_are_refused() {
        assert_eq!(p("XYZZY"), Err(CommandError::Unknown));
        assert_eq!(parse(b"USER \xff"), Err(CommandError::BadCharacters));
        assert_eq!(parse(b"STAT \x00"), Err(CommandError::BadCharacters));
        assert_eq!(parse(b"RETR 1\x0b"), Err(CommandError::BadCharacters));
        assert!(matches!(p("STAT now"), Err(CommandError::Syntax(_))));
    }

    #[test]
    fn control_characters_in_credentials_reach_the_login_to_be_refused_there() {
        assert_eq!(parse(b"USER a\x00b"), Ok(Command::User("a\0b".into())));
        assert_eq!(
            parse(b"PASS secret\rDELE 1"),
            Ok(Command::Pass("secret\rDELE 1".into()))
        );
    }

    #[test]
    fn commands_parse_the_same_at_every_split() {
        let input = b"USER mbx-1\r\nPASS secret word\r\nLIST\r\nTOP 2 10\r\nQUIT\r\n";
        let expected = vec![
            Command::User("mbx-1".into()),
            Command::Pass("secret word".into()),
            Command::List(None),
            Command::Top(2, 10),
            Command::Quit,
        ];
        for size in 1..=input.len() {
            let mut assembler = LineAssembler::new(255);
            let mut got = Vec::new();
            for piece in input.chunks(size) {
                let mut rest = piece;
                while let Some(Line::Complete(line)) = assembler.next_line(&mut rest) {
                    got.push(parse(&line).unwrap());
                }
            }
            assert_eq!(got, expected, "split {size}");
        }
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_parser(line in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&line);
        }

        #[test]
        fn every_verb_with_arbitrary_arguments_parses_or_is_refused(
            verb in prop::sample::select(vec!["CAPA", "STLS", "USER", "PASS", "AUTH", "APOP", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP", "QUIT"]),
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
