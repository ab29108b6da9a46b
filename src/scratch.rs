//! A folder a unit test writes its files into, removed when the test ends
//! (pass or fail), so test runs leave nothing behind in the temp folder.

use std::path::{Path, PathBuf};

pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// An empty folder named after `purpose`, unique to this process and
    /// call, so tests running in parallel never share one.
    pub(crate) fn new(purpose: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(format!(
            "portico-{purpose}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
