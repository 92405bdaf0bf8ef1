//! Writing files so that a crash leaves no half-written one ([`multipl_moe_qwen::files`]),
//! with this crate's error type.

use std::path::Path;

pub use multipl_moe_qwen::files::{replace_with, temp_name};

use crate::error::{Result, TrainError};

/// Writes `bytes` to `path` with [`replace_with`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    replace_with(path, |w| w.write_all(bytes)).map_err(|e| TrainError::io(path, e))
}

/// Reads `path` as JSON into a `T`; errors name the file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Data {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes `value` to `path` as pretty-printed JSON with [`write_atomic`].
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(value).map_err(|e| TrainError::Data {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    write_atomic(path, json.as_bytes())
}

/// Deletes `path`: a directory with everything in it, or a file. One that is not there is
/// fine (the `--overwrite` of `train` and `demo` deletes a list of entries).
pub fn remove_entry(path: &Path) -> Result<()> {
    let removed = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TrainError::io(path, e)),
        _ => Ok(()),
    }
}

/// Top-level record keys added after runs were first recorded (`data.json`'s corpus digest
/// and device count, 2026-11-30): a record written before lacks them, and a run it describes
/// still resumes, compared on the other keys.
const ADDED_KEYS: [&str; 2] = ["corpus_sha256", "devices"];

/// A resumed run continues only with the settings it started with: `record` (this run's
/// `run.json`, `data.json` or `eval.json`) must equal the file the run wrote, if it wrote one
/// (keys of [`ADDED_KEYS`] the file lacks are not compared).
/// [`TrainError::ResumeMismatch`] names the first key that differs.
pub fn same_as_recorded(path: &Path, record: &str) -> Result<()> {
    let was = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TrainError::io(path, e)),
    };
    let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text);
    let (was, mut now) = match (parse(&was), parse(record)) {
        (Ok(was), Ok(now)) => (was, now),
        (Err(e), _) | (_, Err(e)) => {
            return Err(TrainError::Data {
                path: path.to_path_buf(),
                reason: format!("not the JSON a run writes: {e}"),
            });
        }
    };
    if let (Some(recorded), Some(current)) = (was.as_object(), now.as_object_mut()) {
        for key in ADDED_KEYS {
            if !recorded.contains_key(key) {
                current.remove(key);
            }
        }
    }
    match first_difference(&was, &now, String::new()) {
        None => Ok(()),
        Some((key, was, now)) => Err(TrainError::ResumeMismatch {
            path: path.to_path_buf(),
            key,
            was,
            now,
        }),
    }
}

/// The first dotted key at which `a` and `b` differ, with both values (`absent` for a
/// missing one).
fn first_difference(
    a: &serde_json::Value,
    b: &serde_json::Value,
    key: String,
) -> Option<(String, String, String)> {
    use serde_json::Value;
    let join = |k: &str| {
        if key.is_empty() {
            k.to_string()
        } else {
            format!("{key}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(p), Some(q)) => first_difference(p, q, join(k)),
                (p, q) => {
                    let show = |v: Option<&Value>| v.map_or("absent".into(), Value::to_string);
                    Some((join(k), show(p), show(q)))
                }
            })
        }
        _ if a == b => None,
        _ => Some((
            if key.is_empty() {
                "(whole file)".into()
            } else {
                key
            },
            a.to_string(),
            b.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run reads back the times and losses an earlier one wrote, and compares them
    /// (the main job's resume test): JSON must give the same f64 back. serde_json's default
    /// parser is off by one ulp on some values (3.873371817 read as 3.8733718169999998); the
    /// workspace turns on its `float_roundtrip`.
    #[test]
    fn json_gives_back_the_same_f64() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("values.json");
        let mut values = vec![
            3.873371817,
            0.1,
            1.0 / 3.0,
            2.5e-308,
            1.7976931348623157e308,
        ];
        let mut u = 0.6180339887498949f64;
        for i in 0..2000 {
            u = (u * 3.7 + 0.13).fract();
            values.push(u * 10f64.powi(i % 40 - 20));
        }
        write_json(&path, &values).unwrap();
        let back: Vec<f64> = read_json(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        for (a, b) in values.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a} came back as {b}");
        }
    }

    #[test]
    fn a_resume_with_other_settings_names_the_first_differing_key() {
        let dir = std::env::temp_dir().join(format!("multipl-moe-resume-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("run.json");
        let record = r#"{"train": {"lr": 0.002, "seed": 42}, "sequences": 100}"#;
        same_as_recorded(&path, record).expect("no record yet: a run that never wrote one");
        std::fs::write(&path, record).unwrap();
        same_as_recorded(
            &path,
            r#"{"sequences": 100, "train": {"seed": 42, "lr": 0.002}}"#,
        )
        .expect("same values in another order");
        let err = same_as_recorded(
            &path,
            r#"{"train": {"lr": 0.002, "seed": 7}, "sequences": 100}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`train.seed` was 42 and is now 7"), "{err}");
        let err = same_as_recorded(&path, r#"{"train": {"lr": 0.002, "seed": 42}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`sequences` was 100 and is now absent"),
            "{err}"
        );
        // A record of an earlier version lacks the keys added since; the others still count.
        let older = dir.join("data.json");
        std::fs::write(&older, r#"{"skipped_files": 0}"#).unwrap();
        same_as_recorded(
            &older,
            r#"{"skipped_files": 0, "corpus_sha256": "ab", "devices": 1}"#,
        )
        .expect("keys added since are not compared");
        let err = same_as_recorded(&older, r#"{"skipped_files": 2, "devices": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`skipped_files` was 0 and is now 2"), "{err}");
        std::fs::write(&older, r#"{"skipped_files": 0, "devices": 1}"#).unwrap();
        let err = same_as_recorded(&older, r#"{"skipped_files": 0, "devices": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`devices` was 1 and is now 2"), "{err}");
        std::fs::write(&path, "{torn").unwrap();
        let err = same_as_recorded(&path, record).unwrap_err().to_string();
        assert!(
            err.contains("run.json") && err.contains("not the JSON"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
