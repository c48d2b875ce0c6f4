//! The large-request path (issue 15) writes the same upstream bytes as before it was made
//! fast: the 2 MB Claude Code-like request of `benches/fixtures/claude_code.rs`
//! translates to an upstream body with a pinned SHA-256 digest (taken from the straightforward
//! implementation), and the compressed body decompresses to the JSON body.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/fixtures/claude_code.rs"]
mod claude_code;

use std::path::PathBuf;

use codex_as_api::config::Config;
use codex_as_api::internals::dialect::{Ctx, Plan, messages};
use codex_as_api::internals::server::pipeline::prepare_body;
use codex_as_api::internals::upstream::catalog::Catalog;
use http::HeaderMap;
use sha2::{Digest, Sha256};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn upstream_body(target: usize) -> (Vec<u8>, Vec<u8>, bool) {
    let config = Config::for_tests("http://127.0.0.1:1", PathBuf::from("/nonexistent"));
    let catalog = Catalog::builtin();
    let headers = HeaderMap::new();
    let ctx = Ctx {
        config: &config,
        catalog: &catalog,
        headers: &headers,
    };
    let mut body = claude_code::claude_code_request(target);
    let plan = messages::translate(&mut body, &ctx).unwrap();
    let (raw, wire, compressed) = prepare_body(plan.upstream(), true);
    (raw.to_vec(), wire.to_vec(), compressed)
}

/// SHA-256 of the upstream JSON for `claude_code_request(2 << 20)`.
const DIGEST_2MB: &str = "7e081efb597a2456aa1dc3317f0e5b973fb7c7596746d831b82c46a6abe270bb";

#[test]
fn large_claude_code_requests_translate_to_the_pinned_upstream_bytes() {
    let (raw, wire, compressed) = upstream_body(2 << 20);
    assert_eq!(hex(&Sha256::digest(&raw)), DIGEST_2MB);
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert!(v["input"].as_array().unwrap().len() > 10);
    assert!(compressed && wire.len() < raw.len() / 4);
    assert_eq!(zstd::bulk::decompress(&wire, raw.len()).unwrap(), raw);
}
