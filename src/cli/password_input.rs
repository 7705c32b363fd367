//! Getting passwords from files, standard input or a no-echo prompt.

use std::fs;
use std::io::{self, IsTerminal, Read};

use zeroize::Zeroizing;

use super::CliError;
use crate::crypto::Password;

/// Reads the first line of `path` (`-` is standard input) as a password.
pub fn read_password_file(path: &str) -> Result<Password, CliError> {
    let what = if path == "-" {
        "standard input".to_string()
    } else {
        path.to_string()
    };
    let bytes = Zeroizing::new(if path == "-" {
        let mut buf = Vec::new();
        io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::failed(format!("cannot read the password from {what}: {e}")))?;
        buf
    } else {
        fs::read(path).map_err(|e| {
            CliError::failed(format!(
                "cannot read password file {what}: {e}{}",
                super::identity::hint()
            ))
        })?
    });
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CliError::failed(format!("password file {what} is not UTF-8 text")))?;
    let line = text.split('\n').next().unwrap_or("");
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(CliError::failed(format!(
            "password file {what}: the first line is empty"
        )));
    }
    Ok(Password::new(line.to_string()))
}

/// A password from `--<option> FILE`, or from a no-echo prompt when standard
/// input is a terminal; otherwise a usage error naming the option.
pub fn password_from(
    file: Option<String>,
    option: &str,
    prompt: &str,
) -> Result<Password, CliError> {
    if let Some(path) = file {
        return read_password_file(&path);
    }
    if !io::stdin().is_terminal() {
        return Err(CliError::usage(format!(
            "give the password with --{option} FILE (standard input is not a terminal to prompt on)"
        )));
    }
    let text = rpassword::prompt_password(prompt)
        .map_err(|e| CliError::failed(format!("cannot read the password: {e}")))?;
    if text.is_empty() {
        return Err(CliError::failed("no password given"));
    }
    Ok(Password::new(text))
}
