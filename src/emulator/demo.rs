//! `--demo`: the emulator as the backend of a real server or provider, with credentials it
//! accepts written to a temporary auth.json, both alive as long as the `Demo` value.

use crate::config::Config;
use crate::error::Error;

use super::{Emulator, EmulatorConfig};

/// The demo backend of one server or provider; dropping it stops the emulator and removes
/// the credentials.
pub struct Demo {
    _emulator: Emulator,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// When `config.demo` is set: start the emulator and point `config` at it (its URL, its
    /// token endpoint, fresh credentials for one account). Otherwise nothing.
    pub async fn start_if(config: &mut Config) -> Result<Option<Demo>, Error> {
        if !config.demo {
            return Ok(None);
        }
        let emulator = Emulator::start(EmulatorConfig::default())
            .await
            .map_err(|e| Error::internal(format!("cannot start the demo emulator: {e}")))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("codex-as-api-demo-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| Error::internal(format!("demo: {e}")))?;
        let auth = dir.path().join("auth.json");
        emulator
            .issue_credentials(24 * 3600)
            .write_auth_json(&auth)
            .map_err(|e| Error::internal(format!("demo: cannot write credentials: {e}")))?;
        config.upstream_url = emulator.base_url();
        config.token_url = emulator.token_url();
        config.auth_path = auth;
        config.accounts.clear();
        tracing::warn!(
            upstream = %config.upstream_url,
            "DEMO MODE: answers come from the built-in Codex backend emulator, not from ChatGPT"
        );
        Ok(Some(Demo {
            _emulator: emulator,
            _dir: dir,
        }))
    }
}
