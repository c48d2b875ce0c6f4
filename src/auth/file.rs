//! `auth.json` on disk: reading, atomic write-back, the cross-process lock file and the
//! RFC 3339 timestamps in `last_refresh`.
//!
//! Owns: the file format (§12.1 of the protocol notes) and every byte written to
//! `$CODEX_HOME`. The whole document is kept as a `serde_json::Value` (with
//! `preserve_order`), so a write-back changes only `tokens.{id,access,refresh}_token` and
//! `last_refresh` and keeps every key the Codex CLI may add later, in order.
//!
//! Does not own: deciding when to refresh or what a token means (`store`, `claims`).
//! Everything here is blocking I/O; callers run it in `spawn_blocking`.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The credentials read from `auth.json`. Debug redacts every token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Tokens {
    pub id_token: Option<String>,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// `tokens.account_id` as stored (the claim fallback is applied by the store).
    pub account_id: Option<String>,
    /// `last_refresh` in unix seconds, when present and readable.
    pub last_refresh: Option<i64>,
}

impl Tokens {
    /// Whether `other` is a different token set (another process refreshed or logged in).
    pub fn differs(&self, other: &Tokens) -> bool {
        self.access_token != other.access_token || self.refresh_token != other.refresh_token
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("account_id", &self.account_id)
            .field("last_refresh", &self.last_refresh)
            .finish()
    }
}

/// Identity of one version of the file: a rename changes the inode, an in-place rewrite
/// changes mtime or length. Cheap to take (one `stat`), used to notice outside changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        #[cfg(unix)]
        let (dev, ino) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        // Elsewhere a rename shows as a new mtime (the temp file was written just now).
        #[cfg(not(unix))]
        let (dev, ino) = (0, 0);
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
        Stamp {
            dev,
            ino,
            len: meta.len(),
            mtime_ns,
        }
    }
}

/// Files only the owner may read (0600 where there are modes).
pub(crate) fn private(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// `None` when the file does not exist (or cannot be stat'ed).
pub(crate) fn stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path).ok().map(|m| Stamp::of(&m))
}

/// One successful read of `auth.json`.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub doc: Value,
    pub tokens: Tokens,
    pub stamp: Stamp,
}

/// Why `auth.json` holds no usable ChatGPT credentials. The text is safe to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unusable {
    Missing,
    /// Not readable or not JSON; may be a half-written file from an in-place writer.
    Malformed(String),
    /// Valid JSON but not ChatGPT sign-in tokens (API-key mode, no `tokens`).
    NotChatGpt(String),
}

impl Unusable {
    /// A sentence naming `path`, for logs and client-facing errors.
    pub fn describe(&self, path: &Path) -> String {
        match self {
            Unusable::Missing => format!("{} does not exist", path.display()),
            Unusable::Malformed(why) => format!("{} cannot be read: {why}", path.display()),
            Unusable::NotChatGpt(why) => format!("{} {why}", path.display()),
        }
    }
}

/// Read and parse `auth.json`.
pub(crate) fn read(path: &Path) -> Result<Loaded, Unusable> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(e) => return Err(Unusable::Malformed(e.to_string())),
    };
    // The stamp comes from the open handle so it describes exactly the bytes we read.
    let stamp = file
        .metadata()
        .map(|m| Stamp::of(&m))
        .map_err(|e| Unusable::Malformed(e.to_string()))?;
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut file, &mut bytes).map_err(|e| Unusable::Malformed(e.to_string()))?;
    let (doc, tokens) = parse(&bytes)?;
    Ok(Loaded { doc, tokens, stamp })
}

/// Parse the document and pick the ChatGPT tokens out of it.
pub(crate) fn parse(bytes: &[u8]) -> Result<(Value, Tokens), Unusable> {
    // serde_json's messages name a line and column, never the content.
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| Unusable::Malformed(format!("not valid JSON ({e})")))?;
    let Some(obj) = doc.as_object() else {
        return Err(Unusable::Malformed("not a JSON object".into()));
    };
    let mode = obj.get("auth_mode").and_then(Value::as_str);
    let has_key = obj.get("OPENAI_API_KEY").is_some_and(|k| !k.is_null());
    if mode == Some("apikey") || (mode.is_none() && has_key) {
        return Err(Unusable::NotChatGpt(
            "holds an API key (auth_mode \"apikey\"), not ChatGPT sign-in tokens".into(),
        ));
    }
    let Some(tokens) = obj.get("tokens").and_then(Value::as_object) else {
        return Err(Unusable::NotChatGpt(
            "has no `tokens` (no ChatGPT sign-in)".into(),
        ));
    };
    let text = |key: &str| {
        tokens
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let Some(access_token) = text("access_token") else {
        return Err(Unusable::NotChatGpt("has no `tokens.access_token`".into()));
    };
    let parsed = Tokens {
        id_token: text("id_token"),
        access_token,
        refresh_token: text("refresh_token"),
        account_id: text("account_id"),
        last_refresh: obj
            .get("last_refresh")
            .and_then(Value::as_str)
            .and_then(parse_rfc3339),
    };
    Ok((doc, parsed))
}

/// Replace the returned token fields and `last_refresh` in place, keeping everything else
/// (positions included: `preserve_order` replaces existing keys where they stand).
pub(crate) fn apply_refresh(
    doc: &mut Value,
    id_token: Option<&str>,
    access_token: Option<&str>,
    refresh_token: Option<&str>,
    now: (i64, u32),
) {
    let Some(obj) = doc.as_object_mut() else {
        return;
    };
    let tokens = obj
        .entry("tokens")
        .or_insert_with(|| Value::Object(serde_json::Map::new()));
    if let Some(t) = tokens.as_object_mut() {
        for (key, value) in [
            ("id_token", id_token),
            ("access_token", access_token),
            ("refresh_token", refresh_token),
        ] {
            if let Some(v) = value {
                t.insert(key.to_owned(), Value::String(v.to_owned()));
            }
        }
    }
    obj.insert(
        "last_refresh".to_owned(),
        Value::String(format_rfc3339(now.0, now.1)),
    );
}

/// Write `doc` over `path` atomically: exclusive 0600 temp file in the same directory,
/// write, fsync, rename, fsync the directory. Readers see the old or the new file, never a
/// mix, and a crash leaves at worst a stray temp file.
pub(crate) fn write_atomic(path: &Path, doc: &Value) -> io::Result<Stamp> {
    let bytes = serde_json::to_vec_pretty(doc).map_err(io::Error::other)?;
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".to_owned());
    let (tmp_path, mut tmp) = create_temp(&dir, &name)?;
    let result = (|| -> io::Result<()> {
        tmp.write_all(&bytes)?;
        tmp.sync_all()?;
        std::fs::rename(&tmp_path, path)?;
        // Durability of the rename itself; some filesystems refuse fsync on a directory.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result?;
    std::fs::metadata(path).map(|m| Stamp::of(&m))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn create_temp(dir: &Path, name: &str) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..8 {
        let tmp = dir.join(format!(".{name}.tmp-{:016x}", fastrand::u64(..)));
        match private(OpenOptions::new().write(true).create_new(true)).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free temp file name")))
}

/// `<auth.json>.lock`, the file the Codex CLI locks while refreshing.
pub(crate) fn lock_path(path: &Path) -> PathBuf {
    let mut os = path.as_os_str().to_owned();
    os.push(".lock");
    PathBuf::from(os)
}

/// Block until the exclusive advisory lock on `lock_path` is ours. The lock is released
/// when the returned file is dropped.
pub(crate) fn lock(lock_path: &Path) -> io::Result<File> {
    let file = private(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
    )
    .open(lock_path)?;
    file.lock()?;
    Ok(file)
}

/// Now as (unix seconds, nanoseconds).
pub(crate) fn now() -> (i64, u32) {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => (
            i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            d.subsec_nanos(),
        ),
        Err(_) => (0, 0),
    }
}

/// `2026-11-24T08:35:42.548243339Z`, the shape the Codex CLI writes.
pub(crate) fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        tod / 3600,
        tod / 60 % 60,
        tod % 60,
        nanos.min(999_999_999)
    )
}

/// Parse an RFC 3339 date-time to unix seconds (fraction dropped). `None` if malformed.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && sep(i + 3, b":") => {
            let off = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    Some(days * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian, exact for all i64 days
// we can meet).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use serde_json::json;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn rfc3339_round_trips_and_matches_known_instants() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(1_795_509_342, 548_243_339),
            "2026-11-24T08:35:42.548243339Z"
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T08:35:42.548243339Z"),
            Some(1_795_509_342)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T10:35:42+02:00"),
            Some(1_795_509_342)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400));
        for secs in [-86_401, 0, 951_782_400, 4_102_444_800, 1_795_509_342] {
            assert_eq!(parse_rfc3339(&format_rfc3339(secs, 7)), Some(secs));
        }
        for bad in [
            "",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-11-24T08:35:42",
            "2026-11-24T08:35:42.Z",
            "x026-11-24T08:35:42Z",
            "2026-11-24T08:35:42Zjunk",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trip_keeps_unknown_fields_order_and_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let original = json!({
            "auth_mode": "chatgpt",
            "OPENAI_API_KEY": null,
            "tokens": {
                "id_token": "id-old",
                "access_token": "at-old",
                "refresh_token": "rt-old",
                "account_id": "acc",
                "future_nested": {"x": [1, 2]}
            },
            "last_refresh": "2026-01-01T00:00:00Z",
            "agent_identity": {"kept": true}
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&original).unwrap()).unwrap();
        let before = std::fs::metadata(&path).unwrap().ino();
        let mut loaded = read(&path).unwrap();
        assert_eq!(loaded.tokens.access_token, "at-old");
        assert_eq!(loaded.tokens.last_refresh, Some(1_767_225_600));
        apply_refresh(
            &mut loaded.doc,
            None,
            Some("at-new"),
            Some("rt-new"),
            (1_795_509_342, 5),
        );
        let stamp = write_atomic(&path, &loaded.doc).unwrap();
        assert_eq!(Some(stamp), super::stamp(&path));

        let meta = std::fs::metadata(&path).unwrap();
        assert_ne!(meta.ino(), before, "written by rename, not in place");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\n  \"auth_mode\""),
            "2-space pretty: {text}"
        );
        let doc: Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<_> = doc.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "auth_mode",
                "OPENAI_API_KEY",
                "tokens",
                "last_refresh",
                "agent_identity"
            ]
        );
        assert_eq!(doc["tokens"]["id_token"], "id-old");
        assert_eq!(doc["tokens"]["access_token"], "at-new");
        assert_eq!(doc["tokens"]["refresh_token"], "rt-new");
        assert_eq!(doc["tokens"]["future_nested"], json!({"x": [1, 2]}));
        assert_eq!(doc["agent_identity"], json!({"kept": true}));
        assert_eq!(doc["last_refresh"], "2026-11-24T08:35:42.000000005Z");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn api_key_mode_and_missing_tokens_are_not_chatgpt() {
        let cases = [
            json!({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x", "tokens": {"access_token": "a"}}),
            json!({"OPENAI_API_KEY": "sk-x"}),
            json!({"auth_mode": "chatgpt"}),
            json!({"tokens": {"refresh_token": "r"}}),
        ];
        for case in cases {
            let r = parse(case.to_string().as_bytes());
            assert!(matches!(r, Err(Unusable::NotChatGpt(_))), "{case}");
        }
        // An exchanged key stored by old logins does not win over auth_mode chatgpt.
        let ok = json!({"auth_mode": "chatgpt", "OPENAI_API_KEY": "sk-x", "tokens": {"access_token": "a"}});
        assert!(parse(ok.to_string().as_bytes()).is_ok());
        assert!(matches!(parse(b"{\"tok"), Err(Unusable::Malformed(_))));
        assert!(matches!(
            read(Path::new("/nonexistent/auth.json")),
            Err(Unusable::Missing)
        ));
    }

    #[test]
    fn tokens_debug_redacts() {
        let t = Tokens {
            id_token: Some("secret-id".into()),
            access_token: "secret-access".into(),
            refresh_token: Some("secret-refresh".into()),
            account_id: Some("acc".into()),
            last_refresh: None,
        };
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
    }

    #[test]
    fn lock_file_is_created_0600_and_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let lp = lock_path(&dir.path().join("auth.json"));
        assert!(lp.ends_with("auth.json.lock"));
        let held = lock(&lp).unwrap();
        assert_eq!(
            std::fs::metadata(&lp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let other = File::open(&lp).unwrap();
        assert!(other.try_lock().is_err());
        drop(held);
        assert!(other.try_lock().is_ok());
    }
}
