//! Files of a directory tree that someone else may have shaped (a standby's
//! data directory, a stray entry an administrator left in `messages/`),
//! opened so that nothing in it can redirect, block or fool a command.
//!
//! Every step is taken relative to an open directory descriptor, each name
//! one component opened with `O_NOFOLLOW`: no symbolic link anywhere in the
//! path is followed, even if the tree changes while it is walked. A file is
//! opened with `O_NONBLOCK` (a FIFO cannot hang the open) and checked with
//! `fstat` to be a regular file before a byte is read. (rustix provides the
//! system calls; the walk itself is ours because each refusal must name
//! the entry and what it is.)

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags};

/// An entry that is not what it must be: a symbolic link, a FIFO, a
/// directory where a file belongs.
#[derive(Debug)]
pub struct WrongKind {
    /// The entry.
    pub path: PathBuf,
    /// What it is instead, in an administrator's words.
    pub found: &'static str,
    /// What it had to be.
    pub wanted: &'static str,
}

impl fmt::Display for WrongKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: is a {}, not a {}; left alone",
            self.path.display(),
            self.found,
            self.wanted
        )
    }
}

impl std::error::Error for WrongKind {}

/// The `io::Error` for an entry of the wrong kind (its source is [`WrongKind`]).
fn wrong_kind(path: PathBuf, found: &'static str, wanted: &'static str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        WrongKind {
            path,
            found,
            wanted,
        },
    )
}

/// The [`WrongKind`] inside an error, if that is what it is.
pub fn as_wrong_kind(e: &io::Error) -> Option<&WrongKind> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<WrongKind>())
}

/// A file type in an administrator's words.
pub fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice | FileType::BlockDevice => "device",
        FileType::Unknown => "file of unknown type",
    }
}

/// (device, inode): two names for one file have the same identity.
pub type Identity = (u64, u64);

fn identity_of(fd: impl AsFd) -> io::Result<(Identity, FileType)> {
    let st = rustix::fs::fstat(fd)?;
    Ok(((st.st_dev, st.st_ino), FileType::from_raw_mode(st.st_mode)))
}

/// Opens a regular file without following a link and without blocking,
/// and checks what it opened. `path` is relative to `dir` (or the working
/// directory) and its last component must not be a link.
fn open_regular_at(dir: impl AsFd, name: &Path, shown: &Path) -> io::Result<File> {
    let fd: OwnedFd = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            wrong_kind(shown.to_path_buf(), "symbolic link", "regular file")
        } else {
            io::Error::from(e)
        }
    })?;
    let (_, kind) = identity_of(&fd)?;
    if kind != FileType::RegularFile {
        return Err(wrong_kind(
            shown.to_path_buf(),
            kind_name(kind),
            "regular file",
        ));
    }
    // Back to blocking reads (a regular file never blocks anyway).
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// Opens the regular file at `path` for reading: `O_NOFOLLOW` on its last
/// component, `O_NONBLOCK`, and a check that it is a regular file. Every
/// message and key file is opened this way, so a FIFO or a link put in a
/// mailbox can neither hang a session nor pull another file in.
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_regular_at(CWD, path, path)
}

/// Reads a small regular file (a key or mailbox file) whole, opened as
/// [`open_regular`] does, refusing one larger than `max` bytes.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    read_bounded(open_regular(path)?, max)
}

/// Reads `file` whole, refusing one larger than `max` bytes.
pub fn read_bounded(file: File, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(out)
}

/// An open directory; everything below it is reached through it.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
    path: PathBuf,
}

impl Beneath {
    /// Opens the directory an administrator named (links in that path are
    /// the administrator's own choice and are followed).
    pub fn open(path: &Path) -> io::Result<Beneath> {
        let fd = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Beneath {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path it was reached by (for messages only; never reopened).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its (device, inode).
    pub fn identity(&self) -> io::Result<Identity> {
        identity_of(&self.fd).map(|(id, _)| id)
    }

    /// Opens the subdirectory `name`, refusing a link or anything else.
    pub fn dir(&self, name: &str) -> io::Result<Beneath> {
        let path = self.path.join(name);
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR {
                match self.kind(name) {
                    Ok(kind) => wrong_kind(path.clone(), kind_name(kind), "directory"),
                    Err(e) => e,
                }
            } else {
                io::Error::from(e)
            }
        })?;
        Ok(Beneath { fd, path })
    }

    /// Opens the regular file `name` for reading (see [`open_regular`]).
    pub fn file(&self, name: &str) -> io::Result<File> {
        open_regular_at(&self.fd, Path::new(name), &self.path.join(name))
    }

    /// What `name` is, without following a link.
    pub fn kind(&self, name: &str) -> io::Result<FileType> {
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(FileType::from_raw_mode(st.st_mode))
    }

    /// Whether anything is at `name` (a link counts; it is not followed).
    pub fn contains(&self, name: &str) -> io::Result<bool> {
        match self.kind(name) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The names in the directory and what each is (`.` and `..` left out).
    pub fn entries(&self) -> io::Result<Vec<(String, FileType)>> {
        let mut out = Vec::new();
        for entry in Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            let Some(name) = name.to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                FileType::Unknown => self.kind(name)?,
                kind => kind,
            };
            out.push((name.to_owned(), kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Removes the file `name` from this directory (never a directory; a
    /// link is removed itself, never what it points to).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io::Error::from)
    }

    /// Makes the directory's entries durable.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.msg");
        rustix::fs::mknodat(CWD, &fifo, FileType::Fifo, Mode::RUSR | Mode::WUSR, 0).unwrap();
        let e = open_regular(&fifo).unwrap_err();
        let wrong = as_wrong_kind(&e).unwrap();
        assert_eq!(wrong.found, "FIFO");
        assert!(
            e.to_string().contains("is a FIFO, not a regular file"),
            "{e}"
        );
    }

    #[test]
    fn a_link_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"secret").unwrap();
        symlink("target", dir.path().join("link")).unwrap();
        let e = open_regular(&dir.path().join("link")).unwrap_err();
        assert_eq!(as_wrong_kind(&e).unwrap().found, "symbolic link");
        std::fs::create_dir(dir.path().join("real")).unwrap();
        symlink("real", dir.path().join("linked")).unwrap();
        let root = Beneath::open(dir.path()).unwrap();
        let e = root.dir("linked").unwrap_err();
        assert_eq!(as_wrong_kind(&e).unwrap().found, "symbolic link");
        let e = root.dir("target").unwrap_err();
        assert_eq!(as_wrong_kind(&e).unwrap().found, "regular file");
        assert_eq!(
            root.entries().unwrap(),
            vec![
                ("link".to_string(), FileType::Symlink),
                ("linked".to_string(), FileType::Symlink),
                ("real".to_string(), FileType::Directory),
                ("target".to_string(), FileType::RegularFile),
            ]
        );
        root.remove("link").unwrap();
        assert_eq!(std::fs::read(dir.path().join("target")).unwrap(), b"secret");
    }

    #[test]
    fn a_large_small_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.json");
        std::fs::write(&path, vec![b'x'; 100]).unwrap();
        assert_eq!(read_regular(&path, 100).unwrap().len(), 100);
        assert!(read_regular(&path, 99).is_err());
    }
}
