//! SASL as the services speak it: PLAIN (RFC 4616) and LOGIN (the de-facto
//! mechanism of draft-murchison-sasl-login), both ways, for the POP3 server
//! and the two proxies (toward their clients and toward their upstreams).

use zeroize::Zeroizing;

use crate::crypto::{self, Password};

/// The client's line that cancels an exchange (RFC 4954 section 4, RFC 5034 section 4).
pub const CANCEL: &[u8] = b"*";
/// An initial response that stands for an empty one (RFC 4954 section 4).
pub const EMPTY_INITIAL: &str = "=";
/// The LOGIN mechanism's first challenge, `Username:` in base64.
pub const LOGIN_USER_CHALLENGE: &str = "VXNlcm5hbWU6";
/// The LOGIN mechanism's second challenge, `Password:` in base64.
pub const LOGIN_PASSWORD_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Reads a PLAIN response given in base64: `[authzid] NUL authcid NUL
/// password`. An authorization identity other than the login name itself is
/// refused. `None` for anything malformed. Control characters inside the
/// fields are not refused here: the login refuses them with its generic
/// answer, so a client learns nothing from the difference.
pub fn plain(base64: &str) -> Option<(String, Password)> {
    let decoded = Zeroizing::new(crypto::base64_decode(base64.trim()).ok()?);
    let mut parts = decoded.split(|&b| b == 0);
    let (authzid, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || authcid.is_empty() || password.is_empty() {
        return None;
    }
    if !authzid.is_empty() && authzid != authcid {
        return None;
    }
    let authcid = std::str::from_utf8(authcid).ok()?.to_string();
    let password = std::str::from_utf8(password).ok()?.to_string();
    Some((authcid, Password::new(password)))
}

/// A PLAIN response for `user` and `password`, in base64.
pub fn encode_plain(user: &str, password: &Password) -> Zeroizing<String> {
    let token = Zeroizing::new(format!("\0{user}\0{}", password.expose()));
    Zeroizing::new(crypto::base64_encode(token.as_bytes()))
}

/// One LOGIN response: base64 of UTF-8 text; `None` if it is not.
pub fn login_response(line: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let decoded = Zeroizing::new(crypto::base64_decode(text.trim()).ok()?);
    std::str::from_utf8(&decoded).ok().map(str::to_string)
}

/// `text` in base64, as a LOGIN response carries it.
pub fn encode_login(text: &str) -> Zeroizing<String> {
    Zeroizing::new(crypto::base64_encode(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        crypto::base64_encode(s)
    }

    #[test]
    fn plain_takes_user_and_password_and_refuses_impersonation() {
        let (user, pw) = plain(&b64(b"\0mbx-1\0secret pw")).unwrap();
        assert_eq!((user.as_str(), pw.expose()), ("mbx-1", "secret pw"));
        assert!(plain(&b64(b"mbx-1\0mbx-1\0pw")).is_some());
        assert!(
            plain(&b64(b"admin\0mbx-1\0pw")).is_none(),
            "acting as another user"
        );
        assert!(plain(&b64(b"\0mbx-1")).is_none());
        assert!(plain(&b64(b"\0\0pw")).is_none());
        assert!(plain(&b64(b"\0a\0b\0c")).is_none());
        assert!(plain("not base64!").is_none());
    }

    #[test]
    fn what_is_encoded_decodes_to_the_same() {
        let pw = Password::new("p\u{e4}ss word".into());
        let (user, back) = plain(&encode_plain("anna@example.com", &pw)).unwrap();
        assert_eq!(
            (user.as_str(), back.expose()),
            ("anna@example.com", pw.expose())
        );
        assert_eq!(
            login_response(encode_login("anna").as_bytes()).as_deref(),
            Some("anna")
        );
        assert_eq!(login_response(b"\xff"), None);
        assert_eq!(
            login_response(LOGIN_USER_CHALLENGE.as_bytes()).as_deref(),
            Some("Username:")
        );
        assert_eq!(
            login_response(LOGIN_PASSWORD_CHALLENGE.as_bytes()).as_deref(),
            Some("Password:")
        );
    }
}
