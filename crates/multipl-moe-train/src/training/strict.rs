//! Strict configuration files: a key the config type does not know is an error naming it,
//! with the closest known key at the same place as a hint (a typo such as `checkpoint_evry`
//! would otherwise silently leave a feature at its default).

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Result, TrainError};

/// Parses `text` — TOML when `path` ends in `.toml`, JSON otherwise — into `T`; unknown keys
/// anywhere in it are a [`TrainError::UnknownKeys`].
pub fn parse_strict<T: DeserializeOwned + Serialize>(path: &Path, text: &str) -> Result<T> {
    let bad = |reason: String| TrainError::Data {
        path: path.to_path_buf(),
        reason,
    };
    let mut unknown = Vec::new();
    // serde_ignored writes `?` for an `Option` or newtype layer; keys do not have one.
    let record = |p: serde_ignored::Path| {
        let key = p.to_string();
        let parts: Vec<&str> = key.split('.').filter(|s| *s != "?").collect();
        unknown.push(parts.join("."));
    };
    let parsed: T = if path.extension().and_then(|e| e.to_str()) == Some("toml") {
        let de = toml::Deserializer::parse(text).map_err(|e| bad(e.to_string()))?;
        serde_ignored::deserialize(de, record).map_err(|e| bad(e.to_string()))?
    } else {
        let mut de = serde_json::Deserializer::from_str(text);
        let v = serde_ignored::deserialize(&mut de, record).map_err(|e| bad(e.to_string()))?;
        de.end().map_err(|e| bad(e.to_string()))?;
        v
    };
    if unknown.is_empty() {
        return Ok(parsed);
    }
    let known = serde_json::to_value(&parsed).unwrap_or_default();
    let keys = unknown
        .iter()
        .map(|key| match closest_known(&known, key) {
            Some(hint) => format!("`{key}` (did you mean `{hint}`?)"),
            None => format!("`{key}`"),
        })
        .collect();
    Err(TrainError::UnknownKeys {
        path: path.to_path_buf(),
        keys,
    })
}

/// The known key closest to the unknown dotted `key` among its siblings in `known` (the
/// parsed config serialised), if one is close enough to be a likely typo.
pub fn closest_known(known: &serde_json::Value, key: &str) -> Option<String> {
    let (parent, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut node = known;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        node = match node {
            serde_json::Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            other => other.get(part)?,
        };
    }
    let siblings = node.as_object()?;
    siblings
        .keys()
        .map(|k| (strsim::normalized_damerau_levenshtein(k, name), k))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| match parent {
            "" => k.clone(),
            p => format!("{p}.{k}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_is_found_among_siblings_only() {
        let known = serde_json::json!({
            "valid_fraction": 0.1,
            "train": {"checkpoint_every": 5, "seed": 1},
        });
        assert_eq!(
            closest_known(&known, "train.checkpoint_evry").as_deref(),
            Some("train.checkpoint_every")
        );
        assert_eq!(
            closest_known(&known, "valid_fraktion").as_deref(),
            Some("valid_fraction")
        );
        assert_eq!(closest_known(&known, "train.valid_fraktion"), None);
        assert_eq!(closest_known(&known, "zzz"), None);
    }
}
