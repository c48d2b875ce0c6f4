//! The upstream request: the allow-listed body and the headers the official client sends.
//!
//! Owns: `UpstreamRequest` (what every dialect produces), writing it as the backend's JSON
//! body (only allow-listed fields, in the official client's order, `store:false`,
//! `stream:true`, non-empty `instructions`), the "Responses lite" layout of §7.1 for
//! catalog models with `use_responses_lite` (tools as a leading `additional_tools` input
//! item, the instructions as a `developer` message, `reasoning.context:"all_turns"`), the
//! reversible tool-name map for names the backend would reject, stable conversation ids,
//! the header set of §3.3 and the `User-Agent`, the HTTP request of an attempt and the
//! body's zstd compression (one reused context per thread).

use std::borrow::Cow;
use std::cell::RefCell;

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::Full;

use sha2::{Digest, Sha256};

use crate::auth::AuthHeaders;
use crate::error::Error;

pub use crate::auth::user_agent_for as user_agent;

thread_local! {
    /// This worker thread's zstd context, reused by every request it compresses.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// zstd level 1 with the thread's reused context: a fresh context per request
/// (`zstd::bulk::compress`) allocated and set up its tables on every request
/// (`ZSTD_createCCtx` alone was 1.4 % of the proxy's CPU in a profile of the load bench, all
/// of it before the first byte). The output is the same single frame, content size included;
/// the backend decodes any level.
///
/// Why level 1 (issue 15): compression is the largest part of a large request's CPU. The
/// 2 MB Claude Code-like request of `benches/fixtures/claude_code.rs` (2,094,964 bytes of
/// upstream JSON), thread CPU time per compression (`cargo bench --bench codec zstd/2MB`, a
/// loaded 2-core AMD EPYC VM) and instructions (callgrind):
///
/// | level | bytes sent | ratio | CPU    | instructions |
/// |-------|-----------:|------:|-------:|-------------:|
/// | -5    |    573,670 |  3.65 | 3.5 ms |       33.1 M |
/// | -1    |    500,577 |  4.19 | 3.8 ms |       37.0 M |
/// | 1     |    432,534 |  4.84 | 4.0 ms |       37.0 M |
/// | 2     |    421,199 |  4.97 | 4.5 ms |       39.0 M |
/// | 3     |    397,346 |  5.27 | 5.8 ms |       41.7 M |
///
/// Level 1 takes a third less CPU than level 3 for 9 % more bytes (fewer instructions, and
/// its 2^13-entry table stays in cache where level 3's two tables do not); the negative
/// levels save little more CPU (this text is match-dense, so the cost is in encoding
/// sequences, not in searching) for 16–44 % more bytes. zstd's multithreading (`NbWorkers`, the `zstdmt`
/// feature) does not lower the CPU, it moves it to worker threads: a 2 MB body is one job
/// at these levels (the job size is at least 4 windows), so it only adds a handoff and a
/// thread pool per context, and on two cores the workers compete with the tokio workers.
pub fn compress(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    const LEVEL: i32 = 1;
    COMPRESSOR.with(|slot| {
        let mut slot = slot
            .try_borrow_mut()
            .map_err(|_| std::io::Error::other("zstd context in use"))?;
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(LEVEL)?);
        }
        match slot.as_mut() {
            Some(z) => z.compress(raw),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// The body as an HTTP attempt sends it: zstd-compressed when `zstd` (and it compresses),
/// else as is; and whether it is compressed.
pub fn wire_form(raw: &Bytes, zstd: bool) -> (Bytes, bool) {
    if zstd && let Ok(z) = compress(raw) {
        return (Bytes::from(z), true);
    }
    (raw.clone(), false)
}

/// The headers of §3.3 that the HTTP request and the WebSocket handshake share.
pub fn common_headers(
    client_version: &str,
    auth: &AuthHeaders,
    upstream: &UpstreamRequest,
) -> Result<http::HeaderMap, Error> {
    let conv = HeaderValue::from_str(&upstream.conversation_id)
        .map_err(|_| Error::bad_request("conversation id is not a valid header value"))?;
    let mut h = http::HeaderMap::with_capacity(12);
    h.insert(header::AUTHORIZATION, auth.authorization.clone());
    h.insert("chatgpt-account-id", auth.account_id.clone());
    h.insert("originator", HeaderValue::from_static("codex_cli_rs"));
    if let Ok(ua) = HeaderValue::from_str(&user_agent(client_version)) {
        h.insert(header::USER_AGENT, ua);
    }
    h.insert("session-id", conv.clone());
    h.insert("thread-id", conv.clone());
    h.insert("x-client-request-id", conv);
    if let Some(sub) = &upstream.subagent
        && let Ok(v) = HeaderValue::from_str(sub)
    {
        h.insert("x-openai-subagent", v);
    }
    Ok(h)
}

/// The HTTP request of one attempt (§3.3): the shared headers, then the HTTP-only ones
/// (`version`, content type and encoding, memgen, compaction, lite).
pub fn http_request(
    client_version: &str,
    url: &str,
    auth: &AuthHeaders,
    upstream: &UpstreamRequest,
    body: Bytes,
    compressed: bool,
) -> Result<Request<Full<Bytes>>, Error> {
    let mut b = Request::post(url);
    if let Some(h) = b.headers_mut() {
        *h = common_headers(client_version, auth, upstream)?;
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        if let Ok(v) = HeaderValue::from_str(client_version) {
            h.insert("version", v);
        }
        if compressed {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        }
        if upstream.memgen {
            h.insert("x-openai-memgen-request", HeaderValue::from_static("true"));
        }
        if upstream.compaction {
            h.insert(
                "x-codex-beta-features",
                HeaderValue::from_static("remote_compaction_v2"),
            );
        }
        if upstream.lite {
            h.insert(LITE_HEADER, HeaderValue::from_static("true"));
        }
    }
    b.body(Full::new(body))
        .map_err(|e| Error::internal(format!("building the upstream request: {e}")))
}

/// `tool_choice` as the backend takes it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum ToolChoice {
    #[default]
    Auto,
    None,
    Required,
    /// Force this function (upstream name).
    Function(String),
}

/// One request to `{root}/codex/responses`, as built by a dialect.
#[derive(Clone, Debug, Default)]
pub struct UpstreamRequest {
    /// Backend model slug.
    pub model: String,
    /// Base instructions; an empty string is replaced by a one-line default.
    pub instructions: String,
    /// The `input` array, already written as JSON (`[...]`).
    pub input: Vec<u8>,
    /// The `tools` array as JSON (`[]` when none).
    pub tools: Vec<u8>,
    pub tool_choice: ToolChoice,
    pub parallel_tool_calls: bool,
    /// `reasoning.effort`, already clamped to the catalog.
    pub effort: Option<String>,
    /// `reasoning.summary` (`auto`) when the client wants reasoning text.
    pub summary: Option<&'static str>,
    /// The `text` object as JSON (`{"format":…,"verbosity":…}`), when needed.
    pub text: Option<Vec<u8>>,
    pub service_tier: Option<String>,
    /// Stable per-conversation id: `prompt_cache_key` and the session headers.
    pub conversation_id: String,
    /// Add `web_search_call.action.sources` to `include`.
    pub include_sources: bool,
    /// `x-openai-subagent` header.
    pub subagent: Option<String>,
    /// `x-openai-memgen-request: true` header.
    pub memgen: bool,
    /// A remote compaction v2 request (§17.2): `x-codex-beta-features: remote_compaction_v2`.
    pub compaction: bool,
    /// The model's catalog entry has `use_responses_lite`: write the lite layout (§7.1) and
    /// send `x-openai-internal-codex-responses-lite: true`.
    pub lite: bool,
}

/// The header that marks a lite-layout body (§3.2).
pub const LITE_HEADER: &str = "x-openai-internal-codex-responses-lite";

/// The namespace that holds a lite request's function and custom tools; the backend names
/// it on the calls it returns (`"namespace":"functions"`).
pub const LITE_NAMESPACE: &str = "functions";

/// The top-level fields the backend accepts in a `/codex/responses` body (§5.3): the body
/// writer emits no other, and the emulator rejects any other (besides `client_metadata`,
/// which only travels in WebSocket frames).
pub const BODY_FIELDS: &[&str] = &[
    "model",
    "instructions",
    "input",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "store",
    "stream",
    "include",
    "prompt_cache_key",
    "text",
    "service_tier",
];

/// Used when the client gave no system prompt: the backend requires `instructions`.
pub const DEFAULT_INSTRUCTIONS: &str = "You are a helpful assistant.";

impl UpstreamRequest {
    /// The instructions as sent: an empty string becomes the one-line default.
    fn instructions(&self) -> &str {
        if self.instructions.trim().is_empty() {
            DEFAULT_INSTRUCTIONS
        } else {
            &self.instructions
        }
    }

    /// Write the JSON body (uncompressed).
    pub fn write_body(&self, out: &mut Vec<u8>) {
        use crate::json::write_str;
        out.reserve(self.input.len() + self.tools.len() + self.instructions.len() + 512);
        out.extend_from_slice(b"{\"model\":");
        write_str(out, &self.model);
        if self.lite {
            out.extend_from_slice(b",\"input\":");
            self.write_lite_input(out);
        } else {
            out.extend_from_slice(b",\"instructions\":");
            write_str(out, self.instructions());
            out.extend_from_slice(b",\"input\":");
            if self.input.is_empty() {
                out.extend_from_slice(b"[]");
            } else {
                out.extend_from_slice(&self.input);
            }
            out.extend_from_slice(b",\"tools\":");
            if self.tools.is_empty() {
                out.extend_from_slice(b"[]");
            } else {
                out.extend_from_slice(&self.tools);
            }
        }
        out.extend_from_slice(b",\"tool_choice\":");
        match &self.tool_choice {
            // Lite: `none` is emulated by sending no tools (the official client only sends
            // `auto`; the other values are passed on, unverified).
            ToolChoice::None if self.lite => out.extend_from_slice(b"\"auto\""),
            ToolChoice::Auto => out.extend_from_slice(b"\"auto\""),
            ToolChoice::None => out.extend_from_slice(b"\"none\""),
            ToolChoice::Required => out.extend_from_slice(b"\"required\""),
            ToolChoice::Function(name) => {
                out.extend_from_slice(b"{\"type\":\"function\",\"name\":");
                write_str(out, name);
                out.push(b'}');
            }
        }
        out.extend_from_slice(b",\"parallel_tool_calls\":");
        // Lite: the official client always sends `false` (§5.2).
        out.extend_from_slice(if self.parallel_tool_calls && !self.lite {
            b"true"
        } else {
            b"false"
        });
        if self.effort.is_some() || self.summary.is_some() || self.lite {
            out.extend_from_slice(b",\"reasoning\":{");
            let mut first = true;
            if let Some(e) = &self.effort {
                out.extend_from_slice(b"\"effort\":");
                write_str(out, e);
                first = false;
            }
            if let Some(s) = self.summary {
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"summary\":");
                write_str(out, s);
                first = false;
            }
            if self.lite {
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(b"\"context\":\"all_turns\"");
            }
            out.push(b'}');
        }
        out.extend_from_slice(
            b",\"store\":false,\"stream\":true,\"include\":[\"reasoning.encrypted_content\"",
        );
        if self.include_sources {
            out.extend_from_slice(b",\"web_search_call.action.sources\"");
        }
        out.extend_from_slice(b"],\"prompt_cache_key\":");
        write_str(out, &self.conversation_id);
        if let Some(text) = &self.text {
            out.extend_from_slice(b",\"text\":");
            out.extend_from_slice(text);
        }
        if let Some(tier) = &self.service_tier {
            out.extend_from_slice(b",\"service_tier\":");
            write_str(out, tier);
        }
        out.push(b'}');
    }

    /// The lite `input`: the `additional_tools` item (absent when there are no tools or
    /// `tool_choice` is `none`), the instructions as a `developer` message, then the items.
    fn write_lite_input(&self, out: &mut Vec<u8>) {
        out.push(b'[');
        if self.tool_choice != ToolChoice::None
            && let Some(tools) = lite_tools(&self.tools)
        {
            // The id is derived from the tool list, so the prefix stays byte-stable
            // across turns (prompt cache, §6.6).
            let digest = Sha256::digest(&tools);
            out.extend_from_slice(b"{\"type\":\"additional_tools\",\"id\":\"at_");
            for b in &digest[..16] {
                out.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            out.extend_from_slice(b"\",\"role\":\"developer\",\"tools\":");
            out.extend_from_slice(&tools);
            out.extend_from_slice(b"},");
        }
        out.extend_from_slice(
            b"{\"type\":\"message\",\"role\":\"developer\",\"content\":[{\"type\":\"input_text\",\"text\":",
        );
        crate::json::write_str(out, self.instructions());
        out.extend_from_slice(b"}]}");
        let items = self.input.trim_ascii();
        if let Some(inner) = items
            .strip_prefix(b"[")
            .and_then(|i| i.strip_suffix(b"]"))
            .map(<[u8]>::trim_ascii)
            .filter(|i| !i.is_empty())
        {
            out.push(b',');
            out.extend_from_slice(inner);
        }
        out.push(b']');
    }

    /// The body as bytes.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_body(&mut out);
        out
    }
}

/// The `additional_tools` list for a classic `tools` array: function and custom tools go
/// into the `functions` namespace (first), every other tool (namespaces, hosted tools)
/// follows as is. `None` when there is no tool.
fn lite_tools(tools: &[u8]) -> Option<Vec<u8>> {
    use serde_json::Value;
    let list: Vec<Value> = serde_json::from_slice(tools).ok()?;
    if list.is_empty() {
        return None;
    }
    let (own, other): (Vec<Value>, Vec<Value>) = list.into_iter().partition(|t| {
        matches!(
            t.get("type").and_then(Value::as_str),
            Some("function" | "custom")
        )
    });
    let mut out: Vec<Value> = Vec::with_capacity(other.len() + 1);
    if !own.is_empty() {
        out.push(serde_json::json!({
            "type": "namespace",
            "name": LITE_NAMESPACE,
            "description": "",
            "tools": own,
        }));
    }
    out.extend(other);
    serde_json::to_vec(&out).ok()
}

/// Whether the backend accepts `name` as a tool name (`^[a-zA-Z0-9_-]{1,64}$`).
pub fn is_valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The name sent upstream for a client tool name: unchanged when valid; otherwise invalid
/// characters become `_` and names over 64 bytes keep a 55-byte prefix plus `_` and 8 hex
/// digits of a hash of the original, so distinct names stay distinct and the map reverses.
pub fn upstream_tool_name(name: &str) -> Cow<'_, str> {
    if is_valid_tool_name(name) {
        return Cow::Borrowed(name);
    }
    let sanitized: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(name.as_bytes());
    let mut hash = String::with_capacity(8);
    for b in &digest[..4] {
        hash.push_str(&format!("{b:02x}"));
    }
    let keep = sanitized.len().min(55);
    let mut out = String::with_capacity(64);
    out.push_str(&sanitized[..keep]);
    out.push('_');
    out.push_str(&hash);
    Cow::Owned(out)
}

/// Reverse map of shortened tool names for one request.
#[derive(Clone, Debug, Default)]
pub struct ToolNames {
    renamed: Vec<(String, String)>,
}

impl ToolNames {
    /// Register a client tool name; returns the name to send upstream.
    pub fn add<'a>(&mut self, original: &'a str) -> Cow<'a, str> {
        let up = upstream_tool_name(original);
        if let Cow::Owned(u) = &up
            && !self.renamed.iter().any(|(a, _)| a == u)
        {
            self.renamed.push((u.clone(), original.to_owned()));
        }
        up
    }

    /// Whether any registered name had to change (else restoring is a no-op).
    pub fn any_renamed(&self) -> bool {
        !self.renamed.is_empty()
    }

    /// The client's name for an upstream tool name.
    pub fn restore<'a>(&'a self, upstream: &'a str) -> &'a str {
        self.renamed
            .iter()
            .find(|(u, _)| u == upstream)
            .map(|(_, o)| o.as_str())
            .unwrap_or(upstream)
    }
}

/// A stable UUID-shaped id derived from `parts` (same input → same id).
pub fn stable_id(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    let d = h.finalize();
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Bytes when the OS generator fails (it does not on supported systems): SipHash under the
/// standard library's per-process random keys, over a counter. Not a CSPRNG, but no panic.
fn fallback_fill(out: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    for chunk in out.chunks_mut(8) {
        let mut h = keys.build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let v = h.finish().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A random id with a prefix, e.g. `chatcmpl-…`, `msg_…`.
pub fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const LEN: usize = 24;
    let mut s = String::with_capacity(prefix.len() + LEN);
    s.push_str(prefix);
    // These ids are lookup keys (kept exchanges, `previous_response_id`): unguessable, from
    // the OS CSPRNG. Rejection sampling keeps the 62 symbols uniform (~143 bits).
    let mut pool = [0u8; 48];
    let mut have = 0;
    while have < LEN {
        if getrandom::fill(&mut pool).is_err() {
            fallback_fill(&mut pool);
        }
        for b in pool {
            if have == LEN {
                break;
            }
            if b < 248 {
                s.push(ALPHABET[usize::from(b % 62)] as char);
                have += 1;
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_come_from_the_os_generator_not_the_seedable_one() {
        // With fastrand's thread generator reseeded identically, a fastrand-made id repeats.
        fastrand::seed(7);
        let a = random_id("chatcmpl-");
        fastrand::seed(7);
        let b = random_id("chatcmpl-");
        assert_ne!(a, b);
        let body = a.strip_prefix("chatcmpl-").unwrap();
        assert_eq!(body.len(), 24);
        assert!(body.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        let mut x = [0u8; 20];
        let mut y = [0u8; 20];
        fallback_fill(&mut x);
        fallback_fill(&mut y);
        assert_ne!(x, y);
    }

    #[test]
    fn body_is_allow_listed_and_valid_json() {
        let r = UpstreamRequest {
            model: "gpt-5.5".into(),
            instructions: String::new(),
            input: br#"[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}]"#.to_vec(),
            tools: Vec::new(),
            tool_choice: ToolChoice::Function("f".into()),
            parallel_tool_calls: true,
            effort: Some("medium".into()),
            summary: Some("auto"),
            text: Some(br#"{"format":{"type":"json_object"}}"#.to_vec()),
            service_tier: None,
            conversation_id: "conv".into(),
            include_sources: true,
            subagent: None,
            memgen: false,
            compaction: false,
            lite: false,
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(v["instructions"], DEFAULT_INSTRUCTIONS);
        assert_eq!(v["store"], false);
        assert_eq!(v["stream"], true);
        assert_eq!(v["tools"], serde_json::json!([]));
        assert_eq!(v["tool_choice"]["name"], "f");
        assert_eq!(v["reasoning"]["summary"], "auto");
        assert_eq!(v["include"][1], "web_search_call.action.sources");
        assert_eq!(v["prompt_cache_key"], "conv");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        for k in keys {
            assert!(BODY_FIELDS.contains(&k.as_str()), "{k}");
        }
    }

    fn lite(tools: &str, tool_choice: ToolChoice) -> UpstreamRequest {
        UpstreamRequest {
            model: "gpt-6.1-sol".into(),
            instructions: "Be terse.".into(),
            input: br#"[{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}]"#.to_vec(),
            tools: tools.as_bytes().to_vec(),
            tool_choice,
            parallel_tool_calls: true,
            effort: Some("low".into()),
            summary: None,
            text: None,
            service_tier: None,
            conversation_id: "conv".into(),
            include_sources: false,
            subagent: None,
            memgen: false,
            compaction: false,
            lite: true,
        }
    }

    #[test]
    fn lite_body_puts_tools_in_a_leading_additional_tools_item() {
        let tools = r#"[{"type":"function","name":"f","parameters":{"type":"object"},"strict":false},{"type":"web_search"},{"type":"custom","name":"apply_patch"}]"#;
        let body = String::from_utf8(lite(tools, ToolChoice::Auto).body()).unwrap();
        let inner = r#"[{"type":"namespace","name":"functions","description":"","tools":[{"type":"function","name":"f","parameters":{"type":"object"},"strict":false},{"type":"custom","name":"apply_patch"}]},{"type":"web_search"}]"#;
        let digest = Sha256::digest(inner.as_bytes());
        let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let expected = format!(
            concat!(
                r#"{{"model":"gpt-6.1-sol","input":["#,
                r#"{{"type":"additional_tools","id":"at_{id}","role":"developer","tools":{inner}}},"#,
                r#"{{"type":"message","role":"developer","content":[{{"type":"input_text","text":"Be terse."}}]}},"#,
                r#"{{"type":"message","role":"user","content":[{{"type":"input_text","text":"hi"}}]}}],"#,
                r#""tool_choice":"auto","parallel_tool_calls":false,"#,
                r#""reasoning":{{"effort":"low","context":"all_turns"}},"#,
                r#""store":false,"stream":true,"include":["reasoning.encrypted_content"],"prompt_cache_key":"conv"}}"#
            ),
            id = id,
            inner = inner
        );
        assert_eq!(body, expected);
        // Same tools → same item id, so the prefix is byte-stable across turns.
        let mut next = lite(tools, ToolChoice::Auto);
        next.input = br#"[{"type":"message","role":"user","content":[]},{"type":"message","role":"assistant","content":[]}]"#.to_vec();
        let next = String::from_utf8(next.body()).unwrap();
        let prefix = body.find(r#"{"type":"message","role":"user""#).unwrap();
        assert_eq!(next[..prefix], body[..prefix]);
    }

    #[test]
    fn lite_body_without_tools_or_with_tool_choice_none_sends_no_tools() {
        for (tools, choice) in [
            ("", ToolChoice::Auto),
            ("[]", ToolChoice::Auto),
            (r#"[{"type":"function","name":"f"}]"#, ToolChoice::None),
        ] {
            let mut r = lite(tools, choice);
            r.instructions = String::new();
            r.input = Vec::new();
            r.effort = None;
            let body = String::from_utf8(r.body()).unwrap();
            assert_eq!(
                body,
                concat!(
                    r#"{"model":"gpt-6.1-sol","input":[{"type":"message","role":"developer","content":[{"type":"input_text","text":"You are a helpful assistant."}]}],"#,
                    r#""tool_choice":"auto","parallel_tool_calls":false,"reasoning":{"context":"all_turns"},"#,
                    r#""store":false,"stream":true,"include":["reasoning.encrypted_content"],"prompt_cache_key":"conv"}"#
                )
            );
        }
    }

    #[test]
    fn lite_body_keeps_namespaces_and_forced_choices() {
        let tools = r#"[{"type":"namespace","name":"image_gen","description":"d","tools":[{"type":"function","name":"imagegen"}]}]"#;
        let mut r = lite(tools, ToolChoice::Function("f".into()));
        r.summary = Some("auto");
        let v: serde_json::Value = serde_json::from_slice(&r.body()).unwrap();
        assert_eq!(
            v["input"][0]["tools"],
            serde_json::from_str::<serde_json::Value>(tools).unwrap()
        );
        assert_eq!(
            v["tool_choice"],
            serde_json::json!({"type": "function", "name": "f"})
        );
        assert_eq!(
            v["reasoning"],
            serde_json::json!({"effort": "low", "summary": "auto", "context": "all_turns"})
        );
        assert!(v.get("tools").is_none() && v.get("instructions").is_none());
    }

    #[test]
    fn long_tool_names_are_shortened_and_restored() {
        let long = format!("mcp__server__{}", "x".repeat(80));
        let mut names = ToolNames::default();
        let up = names.add(&long).into_owned();
        assert!(is_valid_tool_name(&up));
        assert_eq!(up.len(), 64);
        assert_eq!(names.restore(&up), long);
        assert_eq!(names.add("Bash"), "Bash");
        assert_eq!(names.restore("Bash"), "Bash");
        let other = format!("mcp__server__{}y", "x".repeat(80));
        assert_ne!(upstream_tool_name(&other), up);
        let dotted = names.add("my.tool").into_owned();
        assert!(is_valid_tool_name(&dotted));
        assert_eq!(names.restore(&dotted), "my.tool");
    }

    #[test]
    fn stable_ids_are_stable_and_distinct() {
        assert_eq!(stable_id(&[b"a", b"b"]), stable_id(&[b"a", b"b"]));
        assert_ne!(stable_id(&[b"ab"]), stable_id(&[b"a", b"b"]));
        assert_eq!(stable_id(&[b"x"]).len(), 36);
    }
}
