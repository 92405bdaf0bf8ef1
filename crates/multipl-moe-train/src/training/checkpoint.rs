//! Checkpoints that survive a kill, and how a resumed run chooses one.
//!
//! burn-train's file checkpointer writes `checkpoint/{model,optim,scheduler}-N.mpk` through a
//! [`FileRecorder`]; the stock ones write in place, so a kill leaves a truncated file.
//! [`AtomicRecorder`] writes each file under a hidden temporary name and renames it
//! ([`crate::files::replace_with`]). A resumed run takes the newest checkpoint whose three
//! files all load ([`newest_complete`]); old checkpoints are pruned by [`prune`] once a newer
//! one is complete, never by burn-train itself ([`SaveOnly`]).

use std::path::{Path, PathBuf};

use burn::record::{
    FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder, RecorderError,
};
use burn::tensor::backend::Backend;
use burn::train::checkpoint::{CheckpointingAction, CheckpointingStrategy};
use burn::train::metric::store::EventStoreClient;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::files::replace_with;

/// The three files of a checkpoint, as burn-train names them.
pub const KINDS: [&str; 3] = ["model", "optim", "scheduler"];

/// burn's named-MessagePack file recorder with atomic saves: the file is written to
/// `.NAME.mpk.tmp`, synced, and renamed to `NAME.mpk`. Loading delegates. Full precision:
/// every segment of a run restarts from its checkpoint, and half precision would round the
/// weights and flush AdamW's second moments (often below f16's 6e-8) to zero each time.
#[derive(Debug, Default, Clone)]
pub struct AtomicRecorder {
    inner: NamedMpkFileRecorder<FullPrecisionSettings>,
}

impl<B: Backend> Recorder<B> for AtomicRecorder {
    type Settings = FullPrecisionSettings;
    type RecordArgs = PathBuf;
    type RecordOutput = ();
    type LoadArgs = PathBuf;

    fn save_item<I: Serialize>(&self, item: I, mut file: PathBuf) -> Result<(), RecorderError> {
        file.set_extension(<Self as FileRecorder<B>>::file_extension());
        replace_with(&file, |w| {
            let mut w = KeepsIoError {
                inner: w,
                error: None,
            };
            rmp_serde::encode::write_named(&mut w, &item)
                .map_err(|e| w.error.take().unwrap_or_else(|| std::io::Error::other(e)))
        })
        .map_err(|e| RecorderError::Unknown(format!("{}: {e}", file.display())))
    }

    fn load_item<I: DeserializeOwned>(&self, file: &mut PathBuf) -> Result<I, RecorderError> {
        Recorder::<B>::load_item(&self.inner, file)
    }
}

/// A writer that keeps the first I/O error, which MessagePack's encoder reports only as
/// "error while writing multi-byte MessagePack value" (a full disk must say so).
struct KeepsIoError<'a> {
    inner: &'a mut dyn std::io::Write,
    error: Option<std::io::Error>,
}

impl KeepsIoError<'_> {
    fn keep<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        result.inspect_err(|e| {
            self.error
                .get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
        })
    }
}

impl std::io::Write for KeepsIoError<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.inner.write(buf);
        self.keep(result)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.inner.flush();
        self.keep(result)
    }
}

impl<B: Backend> FileRecorder<B> for AtomicRecorder {
    fn file_extension() -> &'static str {
        "mpk"
    }
}

/// A checkpointing strategy that only saves: deleting is [`prune`]'s job, after a newer
/// checkpoint is complete (burn-train's default deletes while the new files are still being
/// written on other threads).
#[derive(Debug, Default, Clone, Copy)]
pub struct SaveOnly;

impl CheckpointingStrategy for SaveOnly {
    fn checkpointing(&mut self, _: usize, _: &EventStoreClient) -> Vec<CheckpointingAction> {
        vec![CheckpointingAction::Save]
    }
}

/// `dir/KIND-N` (without extension, as recorders take it).
pub fn file_stem(dir: &Path, kind: &str, number: usize) -> PathBuf {
    dir.join(format!("{kind}-{number}"))
}

/// Every checkpoint number with at least one file under `dir`, newest first.
pub fn numbers(dir: &Path) -> Vec<usize> {
    let mut found: Vec<usize> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let stem = name.strip_suffix(".mpk")?;
            let (kind, n) = stem.rsplit_once('-')?;
            KINDS.contains(&kind).then(|| n.parse().ok())?
        })
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    found.dedup();
    found
}

/// Loads `KIND-N.mpk` as the typed record `R`, as burn-train will on resume; the error says
/// why it cannot be used.
pub fn check_record<B: Backend, R: Record<B>>(
    dir: &Path,
    kind: &str,
    number: usize,
    device: &B::Device,
) -> Result<(), String> {
    let stem = file_stem(dir, kind, number);
    match Recorder::<B>::load::<R>(&AtomicRecorder::default(), stem, device) {
        Ok(_) => Ok(()),
        Err(RecorderError::FileNotFound(_)) => Err(format!("{kind}-{number}.mpk is missing")),
        Err(e) => Err(format!("{kind}-{number}.mpk does not load: {e}")),
    }
}

/// A checkpoint that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its number.
    pub number: usize,
    /// Why it cannot be resumed from.
    pub reason: String,
}

/// The newest checkpoint under `dir` for which `usable` holds (it checks that every file
/// loads and anything else resuming needs), and the newer ones skipped with their reasons.
pub fn newest_complete(
    dir: &Path,
    mut usable: impl FnMut(usize) -> Result<(), String>,
) -> (Option<usize>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    for number in numbers(dir) {
        match usable(number) {
            Ok(()) => return (Some(number), skipped),
            Err(reason) => skipped.push(Skipped { number, reason }),
        }
    }
    (None, skipped)
}

/// Deletes every checkpoint numbered `<= newest - keep` (`keep = 0`: keep all) and any
/// temporary file a killed save left behind; returns the numbers deleted.
pub fn prune(dir: &Path, newest: usize, keep: usize) -> std::io::Result<Vec<usize>> {
    remove_temporaries(dir)?;
    if keep == 0 {
        return Ok(Vec::new());
    }
    let old: Vec<usize> = numbers(dir)
        .into_iter()
        .filter(|&n| n + keep <= newest)
        .collect();
    for &n in &old {
        remove(dir, n)?;
    }
    Ok(old)
}

/// Deletes the files of checkpoint `number` (those that exist).
pub fn remove(dir: &Path, number: usize) -> std::io::Result<()> {
    for kind in KINDS {
        let path = file_stem(dir, kind, number).with_extension("mpk");
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Deletes the hidden `.KIND-N.mpk.tmp` files of saves that were killed.
pub fn remove_temporaries(dir: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let is_temp = name.is_some_and(|n| {
            KINDS.iter().any(|k| n.starts_with(&format!(".{k}-"))) && n.ends_with(".mpk.tmp")
        });
        if is_temp {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::temp_name;

    /// A writer with room for `room` bytes, then a full disk.
    struct Full {
        room: usize,
    }

    impl std::io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_encoder_write_error_keeps_its_io_cause() {
        let mut full = Full { room: 100 };
        let mut w = KeepsIoError {
            inner: &mut full,
            error: None,
        };
        let err = rmp_serde::encode::write_named(&mut w, &vec![1.5f32; 1000]).unwrap_err();
        assert!(
            !err.to_string().contains("storage full"),
            "rmp hides it: {err}"
        );
        let kept = w.error.expect("the I/O error is kept");
        assert_eq!(kept.kind(), std::io::ErrorKind::StorageFull);
    }

    #[test]
    fn temporary_name_is_hidden_beside_the_file() {
        let p = Path::new("run/checkpoint/model-3.mpk");
        assert_eq!(
            temp_name(p),
            Path::new("run/checkpoint/.model-3.mpk.tmp").to_path_buf()
        );
    }

    #[test]
    fn numbers_are_newest_first_and_prune_keeps_the_newest() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for n in 1..=4 {
            for kind in KINDS {
                std::fs::write(dir.join(format!("{kind}-{n}.mpk")), b"x").unwrap();
            }
        }
        std::fs::write(dir.join(".optim-5.mpk.tmp"), b"x").unwrap();
        std::fs::write(dir.join("notes-9.mpk"), b"x").unwrap();
        assert_eq!(numbers(&dir), vec![4, 3, 2, 1]);
        assert_eq!(prune(&dir, 4, 2).unwrap(), vec![2, 1]);
        assert_eq!(numbers(&dir), vec![4, 3]);
        assert!(!dir.join(".optim-5.mpk.tmp").exists());
        assert!(dir.join("notes-9.mpk").exists(), "not ours");
        assert_eq!(prune(&dir, 4, 0).unwrap(), Vec::<usize>::new());
        let (found, skipped) =
            newest_complete(&dir, |n| if n == 4 { Err("broken".into()) } else { Ok(()) });
        assert_eq!(found, Some(3));
        assert_eq!(
            skipped,
            vec![Skipped {
                number: 4,
                reason: "broken".into()
            }]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
