//! The checks of single values: each `deserialize_with` function reads one
//! value and words its error the way an administrator reads it (`expected a
//! whole number from 1 to 100000, found "ten"`), and serde's own messages
//! are reworded in the same voice.

use super::*;

/// serde's own wording (an unknown key, a list that is not one), in ours.
pub(super) fn plain_words(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let known: Vec<&str> = rest
            .split_once("expected ")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        return format!("unknown key (known here: {})", known.join(", "));
    }
    if let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.split_once(", expected "))
    {
        let found = match found.split([' ', '`']).next().unwrap_or_default() {
            "string" => "a string",
            "integer" | "floating" => "a number",
            "boolean" => "a boolean",
            "map" => "an object",
            "sequence" => "a list",
            _ => "null",
        };
        let expected = expected.replace("a sequence", "a list");
        return format!("expected {expected}, found {found}");
    }
    message.to_string()
}

/// What a JSON value is, in words.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// The checks of single values. Each takes the JSON value as it is and words
// its own error, so that the message says what was expected and what was found.

pub(super) fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Value::deserialize(d)
}

pub(super) fn number<'de, D: Deserializer<'de>, const MIN: u64, const MAX: u64>(
    d: D,
) -> Result<u64, D::Error> {
    let v = value(d)?;
    match v.as_u64() {
        Some(n) if (MIN..=MAX).contains(&n) => Ok(n),
        _ => Err(de::Error::custom(format!(
            "expected a whole number from {MIN} to {MAX}, found {v}"
        ))),
    }
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match value(d)? {
        Value::Bool(b) => Ok(b),
        other => Err(de::Error::custom(format!(
            "expected true or false, found {}",
            kind(&other)
        ))),
    }
}

pub(super) fn non_empty_string(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s),
        Value::String(_) => Err("must not be empty".into()),
        other => Err(format!("expected a string, found {}", kind(&other))),
    }
}

pub(super) fn dns_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = non_empty_string(value(d)?).map_err(de::Error::custom)?;
    if crate::net::is_dns_name(&name) {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(de::Error::custom(format!(
            "{name:?} is not a valid DNS name"
        )))
    }
}

pub(super) fn optional_node<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match value(d)? {
        Value::Null => Ok(None),
        Value::String(s)
            if (1..=63).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Ok(Some(s))
        }
        other => Err(de::Error::custom(format!(
            "{other} is not a node name (1 to 63 letters, digits and hyphens)"
        ))),
    }
}

pub(super) fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    non_empty_string(value(d)?)
        .map(PathBuf::from)
        .map_err(de::Error::custom)
}

pub(super) fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    match value(d)? {
        Value::Null => Ok(None),
        Value::String(s) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
        other => Err(de::Error::custom(format!(
            "expected a file name or null, found {}",
            kind(&other)
        ))),
    }
}

/// A check of one list entry, with its own wording.
pub(super) trait Check {
    type Out;
    fn check(value: Value) -> Result<Self::Out, String>;
}

/// A list entry that passed `C`'s check; through serde's sequence handling,
/// so that an error names its entry (`smtp.listen[1]`).
pub(super) struct Entry<C: Check>(C::Out);

impl<'de, C: Check> Deserialize<'de> for Entry<C> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        C::check(value(d)?).map(Entry).map_err(de::Error::custom)
    }
}

pub(super) fn list<'de, D: Deserializer<'de>, C: Check>(d: D) -> Result<Vec<C::Out>, D::Error> {
    Ok(Vec::<Entry<C>>::deserialize(d)?
        .into_iter()
        .map(|e| e.0)
        .collect())
}

pub(super) struct AddrCheck;

impl Check for AddrCheck {
    type Out = SocketAddr;
    fn check(item: Value) -> Result<SocketAddr, String> {
        let text = non_empty_string(item).map_err(|_| "expected a non-empty string".to_string())?;
        text.parse().map_err(|_| {
            format!("{text:?} is not an address:port such as \"127.0.0.1:25\" or \"[::]:25\"")
        })
    }
}

pub(super) fn addrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    list::<D, AddrCheck>(d)
}

pub(super) struct PortCheck;

impl Check for PortCheck {
    type Out = u16;
    fn check(item: Value) -> Result<u16, String> {
        match item.as_u64() {
            Some(n @ 1..=65535) => Ok(n as u16),
            _ => Err(format!("expected a port from 1 to 65535, found {item}")),
        }
    }
}

pub(super) fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    list::<D, PortCheck>(d)
}

pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    PortCheck::check(Value::deserialize(d)?).map_err(de::Error::custom)
}

/// Values written as strings and parsed with their `FromStr`.
pub(super) struct ParsedCheck<T>(std::marker::PhantomData<T>);

impl<T: std::str::FromStr<Err = String>> Check for ParsedCheck<T> {
    type Out = T;
    fn check(item: Value) -> Result<T, String> {
        match item {
            Value::String(s) if !s.trim().is_empty() => s.parse(),
            other => Err(format!(
                "expected a non-empty string, found {}",
                kind(&other)
            )),
        }
    }
}

pub(super) fn parsed_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr<Err = String>,
{
    list::<D, ParsedCheck<T>>(d)
}
