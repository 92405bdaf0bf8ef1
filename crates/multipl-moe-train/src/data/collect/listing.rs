//! The candidate files of a root (a directory walked without following links, or a zip
//! archive's entries), sorted by path, and reading one of them.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use super::CollectError;
use super::roots::{Root, RootKind, output_path, skip_dir};

/// One file of a root that is a source of the root's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Its path relative to the root, `/`-separated.
    pub rel: String,
    /// Where it is written, relative to `DIR/<language>/` ([`output_path`]).
    pub out: String,
    /// Its size in bytes as the file system or the zip directory gives it.
    pub size: u64,
    /// Its entry number in a zip root.
    entry: Option<usize>,
}

/// The candidates of a root, sorted by `rel`, and the entries that could not be listed.
#[derive(Debug, Default)]
pub struct Listing {
    /// The candidate files.
    pub files: Vec<Candidate>,
    /// Directories or names that could not be read (permissions, non-UTF-8 names).
    pub unreadable: usize,
}

/// Lists the candidates of `root`: files whose name makes them a source of its language
/// ([`output_path`]), outside the directories [`skip_dir`] leaves out. Symbolic links are
/// not followed (a tree with a link to a parent neither loops nor repeats files).
pub fn list(root: &Root) -> Result<Listing, CollectError> {
    let mut listing = match root.kind {
        RootKind::Dir => list_dir(root)?,
        RootKind::Zip => list_zip(root)?,
    };
    listing.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(listing)
}

fn list_dir(root: &Root) -> Result<Listing, CollectError> {
    let mut listing = Listing::default();
    let mut stack = vec![(root.path.clone(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match dir.read_dir() {
            Ok(entries) => entries,
            Err(e) if dir == root.path => return Err(CollectError::io(&dir, e)),
            Err(_) => {
                listing.unreadable += 1;
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else {
                listing.unreadable += 1;
                continue;
            };
            let file_name = entry.file_name();
            let (Ok(kind), Some(name)) = (entry.file_type(), file_name.to_str()) else {
                listing.unreadable += 1;
                continue;
            };
            let rel = format!("{prefix}{name}");
            if kind.is_dir() {
                if !skip_dir(root.language, name) {
                    stack.push((entry.path(), format!("{rel}/")));
                }
            } else if kind.is_file()
                && let Some(out) = output_path(root.language, &rel)
            {
                match entry.metadata() {
                    Ok(meta) => listing.files.push(Candidate {
                        rel,
                        out,
                        size: meta.len(),
                        entry: None,
                    }),
                    Err(_) => listing.unreadable += 1,
                }
            }
        }
    }
    Ok(listing)
}

fn open_zip(path: &Path) -> Result<ZipArchive<File>, CollectError> {
    let file = File::open(path).map_err(|e| CollectError::io(path, e))?;
    ZipArchive::new(file).map_err(|e| CollectError::Zip {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn list_zip(root: &Root) -> Result<Listing, CollectError> {
    let mut archive = open_zip(&root.path)?;
    let mut listing = Listing::default();
    for i in 0..archive.len() {
        let Ok(entry) = archive.by_index_raw(i) else {
            listing.unreadable += 1;
            continue;
        };
        if !entry.is_file() {
            continue;
        }
        // `enclosed_name` refuses absolute names and `..` escapes.
        let Some(rel) = entry
            .enclosed_name()
            .and_then(|p| p.to_str().map(|s| s.replace('\\', "/")))
        else {
            listing.unreadable += 1;
            continue;
        };
        let (dirs, _) = rel.rsplit_once('/').unwrap_or(("", &rel));
        if dirs.split('/').any(|d| skip_dir(root.language, d)) {
            continue;
        }
        if let Some(out) = output_path(root.language, &rel) {
            listing.files.push(Candidate {
                rel,
                out,
                size: entry.size(),
                entry: Some(i),
            });
        }
    }
    Ok(listing)
}

/// Reads the candidates of one root.
pub struct Reader {
    root: PathBuf,
    archive: Option<ZipArchive<File>>,
}

impl Reader {
    /// A reader of `root`'s files (a zip root is opened once).
    pub fn open(root: &Root) -> Result<Self, CollectError> {
        let archive = match root.kind {
            RootKind::Dir => None,
            RootKind::Zip => Some(open_zip(&root.path)?),
        };
        Ok(Self {
            root: root.path.clone(),
            archive,
        })
    }

    /// The bytes of `file`, at most `limit` of them (`None` when it holds more).
    pub fn read(&mut self, file: &Candidate, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        let taken = match (&mut self.archive, file.entry) {
            (Some(archive), Some(i)) => archive
                .by_index(i)
                .map_err(std::io::Error::other)?
                .take(limit + 1)
                .read_to_end(&mut bytes)?,
            _ => File::open(self.root.join(&file.rel))?
                .take(limit + 1)
                .read_to_end(&mut bytes)?,
        };
        Ok((taken as u64 <= limit).then_some(bytes))
    }

    /// Where `file` came from: its path, or `ARCHIVE!/ENTRY` inside a zip.
    pub fn source(&self, file: &Candidate) -> String {
        match file.entry {
            Some(_) => format!("{}!/{}", self.root.display(), file.rel),
            None => self.root.join(&file.rel).display().to_string(),
        }
    }
}
