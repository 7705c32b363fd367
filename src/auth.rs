//! Passwords: the strength rule, generation.

use crate::crypto::{self, Password};

/// Shortest password a user may choose.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Symbols of generated passwords: lowercase letters and digits without the
/// look-alikes 0/o, 1/l; 32 symbols, so each carries 5 bits.
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
/// 7 groups of 4 symbols: 28 * 5 = 140 bits.
const GROUPS: usize = 7;
const GROUP_LEN: usize = 4;

/// Bits of randomness in a generated password.
pub const GENERATED_BITS: usize = GROUPS * GROUP_LEN * 5;

/// A fresh random password such as `k7dm-2xqa-…` (140 bits).
pub fn generate_password() -> Password {
    let mut text = String::with_capacity(GROUPS * (GROUP_LEN + 1));
    for group in 0..GROUPS {
        if group > 0 {
            text.push('-');
        }
        for _ in 0..GROUP_LEN {
            text.push(ALPHABET[crypto::random_below(ALPHABET.len() as u32) as usize] as char);
        }
    }
    Password::new(text)
}

/// Checks a password chosen by a user: at least 12 characters and zxcvbn
/// score 4. `context` holds words the password must not lean on (mailbox
/// name, id). The error says why, in a sentence.
pub fn check_password_strength(password: &Password, context: &[&str]) -> Result<(), String> {
    let text = password.expose();
    if text.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if text.chars().any(char::is_control) {
        return Err("the password must not contain control characters".into());
    }
    let entropy = zxcvbn::zxcvbn(text, context);
    if entropy.score() == zxcvbn::Score::Four {
        return Ok(());
    }
    let mut reason = String::from("the password is too easy to guess");
    if let Some(feedback) = entropy.feedback() {
        if let Some(warning) = feedback.warning() {
            reason.push_str(&format!(": {warning}"));
        }
        for suggestion in feedback.suggestions() {
            reason.push_str(&format!(" {suggestion}"));
        }
    }
    reason.push_str(" (leave out --password-file to have a strong one generated)");
    Err(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::new(s.to_string())
    }

    #[test]
    fn generated_passwords_carry_at_least_128_bits() {
        const { assert!(GENERATED_BITS >= 128) };
        let a = generate_password();
        let b = generate_password();
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 34);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c == b'-' || ALPHABET.contains(&c))
        );
    }

    #[test]
    fn generated_passwords_pass_the_strength_rule() {
        for _ in 0..5 {
            assert_eq!(check_password_strength(&generate_password(), &[]), Ok(()));
        }
    }

    #[test]
    fn short_passwords_are_refused_with_the_reason() {
        let err = check_password_strength(&pw("Xk9#mQ2!"), &[]).unwrap_err();
        assert!(err.contains("at least 12 characters"), "{err}");
    }

    #[test]
    fn long_but_guessable_passwords_are_refused() {
        let err = check_password_strength(&pw("password1234"), &[]).unwrap_err();
        assert!(err.contains("too easy to guess"), "{err}");
        let err = check_password_strength(&pw("qwertyuiopasdfgh"), &[]).unwrap_err();
        assert!(err.contains("too easy to guess"), "{err}");
        let err = check_password_strength(&pw("AcmeJournal2026"), &["AcmeJournal"]).unwrap_err();
        assert!(err.contains("too easy to guess"), "{err}");
    }

    #[test]
    fn a_strong_chosen_password_is_accepted() {
        assert_eq!(
            check_password_strength(&pw("correct-Horse-battery-staple-94!"), &[]),
            Ok(())
        );
    }
}
