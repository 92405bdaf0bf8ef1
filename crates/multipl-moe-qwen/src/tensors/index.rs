//! `model.safetensors.index.json`, checked against the shards it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{QwenError, Result, io_err};

/// `model.safetensors.index.json`: which shard holds which key.
pub(super) struct ShardIndex {
    path: PathBuf,
    /// Distinct shard files, sorted.
    pub(super) files: Vec<PathBuf>,
    /// Key → shard file.
    weight_map: BTreeMap<String, PathBuf>,
}

impl ShardIndex {
    pub(super) fn read(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(io_err(index))?;
        let bad = |reason: String| QwenError::BadConfig {
            path: index.to_path_buf(),
            field: "weight_map".into(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad("missing or not an object".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = Vec::new();
        let mut names: BTreeMap<PathBuf, String> = BTreeMap::new();
        let mut weight_map = BTreeMap::new();
        for (key, file) in map {
            let name = file
                .as_str()
                .ok_or_else(|| bad(format!("`{key}` maps to a non-string")))?;
            let path = dir.join(name);
            if !path.exists() {
                return Err(QwenError::MissingShard {
                    shard: path,
                    index: index.to_path_buf(),
                });
            }
            let canonical = path.canonicalize().map_err(io_err(&path))?;
            match names.get(&canonical) {
                Some(first) if first != name => {
                    return Err(bad(format!(
                        "shard {} is listed under two names, `{first}` and `{name}`",
                        canonical.display()
                    )));
                }
                Some(_) => {}
                None => {
                    names.insert(canonical, name.to_string());
                    files.push(path.clone());
                }
            }
            weight_map.insert(key.clone(), path);
        }
        files.sort();
        Ok(Self {
            path: index.to_path_buf(),
            files,
            weight_map,
        })
    }

    /// Every key of every shard is listed for that shard, and every listed key is there.
    /// `held` maps each key the shards hold to the shard file holding it.
    pub(super) fn check(&self, held: &BTreeMap<&str, &Path>) -> Result<()> {
        for (&key, &held_by) in held {
            match self.weight_map.get(key) {
                None => {
                    return Err(QwenError::ShardConflict {
                        key: key.to_string(),
                        reason: format!(
                            "in {} but not listed in {}",
                            held_by.display(),
                            self.path.display()
                        ),
                    });
                }
                Some(listed) if listed != held_by => {
                    return Err(QwenError::ShardConflict {
                        key: key.to_string(),
                        reason: format!(
                            "{} lists it in {}, but {} holds it",
                            self.path.display(),
                            listed.display(),
                            held_by.display()
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        if let Some((key, listed)) = self
            .weight_map
            .iter()
            .find(|(key, _)| !held.contains_key(key.as_str()))
        {
            return Err(QwenError::ShardConflict {
                key: key.clone(),
                reason: format!(
                    "{} lists it in {}, which does not hold it",
                    self.path.display(),
                    listed.display()
                ),
            });
        }
        Ok(())
    }
}
