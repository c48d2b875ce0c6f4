//! Claude Code's first run, done for it: `codex-as-api claude` marks onboarding complete and
//! approves the key it hands over, in Claude Code's global config
//! (`$CLAUDE_CONFIG_DIR/.claude.json`, else `~/.claude.json`).
//!
//! Why: on a first run Claude Code's onboarding checks api.anthropic.com and stops at
//! "Unable to connect to Anthropic services" where that host is unreachable, then asks "Do
//! you want to use this API key?" with "No" preselected. Claude Code records the answers as
//! `hasCompletedOnboarding: true` and the key's last 20 characters (after trimming) in
//! `customApiKeyResponses.approved`; this module writes the same.
//!
//! Owns: finding that file, merging the two settings into it (every other key kept, nothing
//! changed that is already set: an approved key stays, a key the user rejected stays
//! rejected, an onboarding already completed is not touched), and writing it atomically (a
//! temp file in the same directory, renamed over it; a symlinked file is written at its
//! target). A file that is not a JSON object is left alone.
//!
//! Does not own: folder trust ("Do you trust the files in this folder?") — that stays the
//! user's answer, per folder.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// How many trailing characters of the key Claude Code records (its `slice(-20)`).
const KEY_TAIL: usize = 20;

/// Claude Code's global config file for this environment.
pub fn config_path() -> Option<PathBuf> {
    let dir = std::env::var_os("CLAUDE_CONFIG_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(crate::config::home_dir)?;
    Some(dir.join(".claude.json"))
}

/// What Claude Code stores for `key`: `key.trim().slice(-20)`, its last 20 UTF-16 code
/// units (characters, for the ASCII keys there are).
pub fn key_tail(key: &str) -> String {
    let units: Vec<u16> = key.trim().encode_utf16().collect();
    String::from_utf16_lossy(&units[units.len().saturating_sub(KEY_TAIL)..])
}

/// What the merge did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Merged {
    /// `hasCompletedOnboarding` was set.
    pub onboarding: bool,
    /// The key was added to `customApiKeyResponses.approved`.
    pub approved: bool,
    /// The user has rejected this key before: left as it is.
    pub rejected: bool,
}

impl Merged {
    fn changed(&self) -> bool {
        self.onboarding || self.approved
    }
}

/// Merge the settings into `config` (a JSON object). Only missing settings are added.
pub fn merge(config: &mut Map<String, Value>, key: &str) -> Merged {
    let mut m = Merged::default();
    if config.get("hasCompletedOnboarding") != Some(&Value::Bool(true)) {
        config.insert("hasCompletedOnboarding".to_owned(), Value::Bool(true));
        m.onboarding = true;
    }
    let tail = key_tail(key);
    if tail.is_empty() {
        return m;
    }
    let responses = config
        .entry("customApiKeyResponses")
        .or_insert_with(|| Value::Object(Map::new()));
    if !responses.is_object() {
        *responses = Value::Object(Map::new());
    }
    let Value::Object(responses) = responses else {
        return m;
    };
    let listed = |list: Option<&Value>| {
        list.and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(tail.as_str())))
    };
    if listed(responses.get("rejected")) {
        m.rejected = true;
        return m;
    }
    if listed(responses.get("approved")) {
        return m;
    }
    let approved = responses
        .entry("approved")
        .or_insert_with(|| Value::Array(Vec::new()));
    if !approved.is_array() {
        *approved = Value::Array(Vec::new());
    }
    if let Value::Array(list) = approved {
        list.push(Value::String(tail));
        m.approved = true;
    }
    if !responses.contains_key("rejected") {
        responses.insert("rejected".to_owned(), Value::Array(Vec::new()));
    }
    m
}

/// Read `path` (missing: `{}`), merge, and write it back atomically when something changed.
pub fn apply(path: &Path, key: &str) -> Result<Merged, String> {
    // Write where a symlinked config really lives, so the link survives.
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut config = match std::fs::read(&path) {
        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            _ => {
                return Err(format!(
                    "{} is not a JSON object; left as it is",
                    path.display()
                ));
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let merged = merge(&mut config, key);
    if merged.changed() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        crate::auth::file::write_atomic(&path, &Value::Object(config))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_key_tail_is_claude_codes_slice() {
        assert_eq!(key_tail("codex-as-api"), "codex-as-api");
        assert_eq!(
            key_tail("  sk-local-0123456789abcdefghijXYZ \n"),
            "3456789abcdefghijXYZ"
        );
        assert_eq!(
            key_tail("sk-local-0123456789abcdefghijXYZ").chars().count(),
            20
        );
        assert_eq!(key_tail("ééééééééééééééééééééééé"), "éééééééééééééééééééé");
    }

    #[test]
    fn an_empty_config_gets_both_settings() {
        let mut c = Map::new();
        let m = merge(&mut c, "codex-as-api");
        assert_eq!(
            m,
            Merged {
                onboarding: true,
                approved: true,
                rejected: false
            }
        );
        assert_eq!(
            Value::Object(c),
            json!({"hasCompletedOnboarding": true,
                   "customApiKeyResponses": {"approved": ["codex-as-api"], "rejected": []}})
        );
    }

    #[test]
    fn other_keys_and_answers_are_kept_and_nothing_set_is_overwritten() {
        let before = json!({
            "numStartups": 4,
            "theme": "light",
            "projects": {"/w": {"hasTrustDialogAccepted": true}},
            "hasCompletedOnboarding": true,
            "customApiKeyResponses": {"approved": ["other-key"], "rejected": ["bad-key"], "x": 1},
        });
        let mut c = obj(before.clone());
        let m = merge(&mut c, "codex-as-api");
        assert!(!m.onboarding && m.approved);
        let mut want = before.clone();
        want["customApiKeyResponses"]["approved"] = json!(["other-key", "codex-as-api"]);
        assert_eq!(Value::Object(c.clone()), want);
        // Keys keep their order.
        assert_eq!(
            c.keys().collect::<Vec<_>>(),
            [
                "numStartups",
                "theme",
                "projects",
                "hasCompletedOnboarding",
                "customApiKeyResponses"
            ]
        );
        // A second run changes nothing.
        let again = merge(&mut c, "codex-as-api");
        assert_eq!(again, Merged::default());
        assert_eq!(Value::Object(c), want);
    }

    #[test]
    fn a_rejected_key_stays_rejected() {
        let mut c =
            obj(json!({"customApiKeyResponses": {"approved": [], "rejected": ["codex-as-api"]}}));
        let m = merge(&mut c, "codex-as-api");
        assert!(m.rejected && !m.approved && m.onboarding);
        assert_eq!(c["customApiKeyResponses"]["approved"], json!([]));
    }

    #[test]
    #[cfg(unix)]
    fn apply_writes_atomically_and_only_when_something_changed() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".claude.json");
        // Missing file: created.
        let m = apply(&path, "sk-local-test").unwrap();
        assert!(m.onboarding && m.approved);
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            v["customApiKeyResponses"]["approved"],
            json!(["sk-local-test"])
        );
        // An existing file: merged through a rename (a new inode), other keys kept.
        std::fs::write(
            &path,
            r#"{"userID":"u1","hasCompletedOnboarding":false,"mcpServers":{}}"#,
        )
        .unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        apply(&path, "sk-local-test").unwrap();
        assert_ne!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "renamed over"
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["userID"], "u1");
        assert_eq!(v["mcpServers"], json!({}));
        assert_eq!(v["hasCompletedOnboarding"], true);
        // Nothing to change: the file is not rewritten.
        let inode = std::fs::metadata(&path).unwrap().ino();
        assert_eq!(apply(&path, "sk-local-test").unwrap(), Merged::default());
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
        // No temp file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [".claude.json"]);
        // Not a JSON object: left alone.
        std::fs::write(&path, "[1, 2").unwrap();
        assert!(apply(&path, "k").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"[1, 2");
    }

    #[test]
    #[cfg(unix)]
    fn a_symlinked_config_is_written_at_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-claude.json");
        std::fs::write(&real, r#"{"theme":"dark"}"#).unwrap();
        let link = dir.path().join(".claude.json");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        apply(&link, "codex-as-api").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let v: Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
        assert_eq!(v["theme"], "dark");
        assert_eq!(v["hasCompletedOnboarding"], true);
    }
}
