//! Writing files so that a crash leaves no half-written one: the one implementation used by
//! the export here and by the training crate (checkpoints, `loss.csv`, reports).

use std::io::Write;
use std::path::{Path, PathBuf};

/// The hidden temporary name `path` is written under before it is renamed into place:
/// `dir/.name.tmp`.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `path` through `write` into [`temp_name`]`(path)`, flushes and syncs it, then
/// renames it over `path` (and syncs the directory where the platform allows), so that a
/// kill at any moment leaves either the old file or the new one, never a part.
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = temp_name(path);
    let result = (|| {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        write(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    // Persist the rename itself; best effort (not every platform opens directories).
    if let Some(d) = dir.and_then(|d| std::fs::File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{replace_with, temp_name};

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-files-{}", std::process::id()));
        let path = dir.join("config.json");
        replace_with(&path, |w| w.write_all(b"old")).expect("first write");
        let failed = replace_with(&path, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&path).expect("kept"), b"old");
        assert!(!temp_name(&path).exists());
        assert_eq!(temp_name(&path), dir.join(".config.json.tmp"));
        replace_with(&path, |w| w.write_all(b"new")).expect("second write");
        assert_eq!(std::fs::read(&path).expect("replaced"), b"new");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
