//! The upstream request: the allow-listed body and the headers the official client sends.
//!
//! Owns: `UpstreamRequest` (what every dialect produces), writing it as the backend's JSON
//! body (only allow-listed fields, in the official client's order, `store:false`,
//! `stream:true`, non-empty `instructions`), the reversible tool-name map for names the
//! backend would reject, stable conversation ids, and the header set of §3.3.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

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
}

/// Used when the client gave no system prompt: the backend requires `instructions`.
pub const DEFAULT_INSTRUCTIONS: &str = "You are a helpful assistant.";

impl UpstreamRequest {
    /// Write the JSON body (uncompressed).
    pub fn write_body(&self, out: &mut Vec<u8>) {
        use crate::json::write_str;
        out.reserve(self.input.len() + self.tools.len() + self.instructions.len() + 512);
        out.extend_from_slice(b"{\"model\":");
        write_str(out, &self.model);
        out.extend_from_slice(b",\"instructions\":");
        let instructions = if self.instructions.trim().is_empty() {
            DEFAULT_INSTRUCTIONS
        } else {
            &self.instructions
        };
        write_str(out, instructions);
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
        out.extend_from_slice(b",\"tool_choice\":");
        match &self.tool_choice {
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
        out.extend_from_slice(if self.parallel_tool_calls {
            b"true"
        } else {
            b"false"
        });
        if self.effort.is_some() || self.summary.is_some() {
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

    /// The body as bytes.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_body(&mut out);
        out
    }
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

/// A random id with a prefix, e.g. `chatcmpl-…`, `msg_…`.
pub fn random_id(prefix: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + 24);
    s.push_str(prefix);
    for _ in 0..24 {
        let c = fastrand::alphanumeric();
        s.push(c);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert!(
                [
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
                    "service_tier"
                ]
                .contains(&k.as_str()),
                "{k}"
            );
        }
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
