//! Credentials (temporary stub with the agreed API; replaced by the auth branch).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use crate::upstream::client::HttpClient;

pub struct AuthHeaders {
    pub authorization: http::HeaderValue,
    pub account_id: http::HeaderValue,
    pub expires_at: Option<i64>,
    pub plan: Option<String>,
    pub email: Option<String>,
    pub generation: u64,
}

pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    pub fn new(auth_path: PathBuf, _token_url: String, _client: HttpClient) -> Arc<TokenStore> {
        Arc::new(TokenStore { path: auth_path })
    }
    pub fn current(&self) -> Option<Arc<AuthHeaders>> {
        None
    }
    pub fn available(&self) -> bool {
        false
    }
    pub fn auth_path(&self) -> &Path {
        &self.path
    }
    pub async fn headers(&self) -> Result<Arc<AuthHeaders>, Error> {
        Err(Error::new(ErrorKind::AuthUnavailable, "stub"))
    }
    pub async fn reload(&self, _failed: &AuthHeaders) -> Result<Option<Arc<AuthHeaders>>, Error> {
        Ok(None)
    }
    pub async fn refresh_after_unauthorized(
        &self,
        _failed: &AuthHeaders,
    ) -> Result<Arc<AuthHeaders>, Error> {
        Err(Error::new(ErrorKind::AuthUnavailable, "stub"))
    }
    pub fn token_calls(&self) -> u64 {
        0
    }
}
