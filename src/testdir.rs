//! Temporary directories for unit tests, removed when dropped.

use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates an empty directory whose name starts with `sealpost-<label>-`.
    pub fn new(label: &str) -> TempDir {
        let mut bytes = [0u8; 8];
        crate::crypto::random_bytes(&mut bytes);
        let path = std::env::temp_dir().join(format!(
            "sealpost-{label}-{:016x}",
            u64::from_le_bytes(bytes)
        ));
        std::fs::create_dir_all(&path).expect("create test directory");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
