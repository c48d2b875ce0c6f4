//! Token counting for `count_tokens` and prompt-size estimates.
//!
//! Owns: the exact o200k_base count of a string (tiktoken-rs, which embeds the vocabulary, so
//! this works offline; the BPE is built once, on first use) and the count of an upstream
//! request body: `instructions`, every text, argument and output string in `input`, and the
//! `tools` JSON. Images are estimated at a fixed cost, files from their size. Reasoning
//! items' `encrypted_content` is opaque and not counted.
//!
//! Cost bound: the tokenizer's pre-split regex and byte-pair merge grow faster than linearly
//! on one long unbroken run (a megabyte of base64 or of spaces is one "piece"). So text is
//! cut wherever a run of non-whitespace or of whitespace reaches [`MAX_RUN`] bytes, and the
//! parts are counted separately: no piece exceeds 4 KiB, the cost is linear in the input
//! (a few MB/s per core), and the count differs from the exact one by at most one token per
//! cut (ordinary prose, with words far shorter than 4 KiB, is counted exactly). Callers on
//! the server run counts on the blocking pool (`spawn_blocking`), never on an async worker.
//!
//! Does not own: translating client requests (the dialects build the upstream body that is
//! counted here) or the response shape of `count_tokens`.

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// Tokens charged for one image (the size of a 512×512 high-detail tile set).
pub const IMAGE_TOKENS: u64 = 765;

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

/// Build the tokenizer now (about 0.1-0.3 s and ~45 MB), so a later `count_tokens` does
/// not pay for it.
pub fn warm() {
    let _ = bpe();
}

/// Build the tokenizer on a blocking thread, once per process. The server calls this on
/// its first Anthropic request (Claude Code counts tokens; other clients never need the
/// vocabulary), so an idle server or an OpenAI-only one stays small.
pub fn warm_in_background() {
    static STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !STARTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tokio::task::spawn_blocking(warm);
    }
}

/// The longest run of whitespace or of non-whitespace counted as one part (see the module
/// doc for the bound this gives).
pub const MAX_RUN: usize = 4096;

/// The o200k_base token count of `text` (special-token strings count as plain text): exact
/// unless a run reaches [`MAX_RUN`] bytes (then within one token per cut). Falls back to one
/// token per 4 bytes should the embedded vocabulary ever fail to load.
pub fn count(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    let Some(bpe) = bpe() else {
        return text.len().div_ceil(4);
    };
    let mut total = 0;
    let mut start = 0;
    for cut in cuts(text) {
        total += bpe.encode_ordinary(&text[start..cut]).len();
        start = cut;
    }
    total + bpe.encode_ordinary(&text[start..]).len()
}

/// Where to cut `text` so that no run of whitespace or of non-whitespace in one part is
/// longer than [`MAX_RUN`] bytes (cuts fall on char boundaries).
fn cuts(text: &str) -> impl Iterator<Item = usize> + '_ {
    let bytes = text.as_bytes();
    let mut run = 0usize;
    let mut space = false;
    (0..bytes.len()).filter(move |&i| {
        let is_space = bytes[i].is_ascii_whitespace();
        if is_space != space {
            space = is_space;
            run = 0;
        }
        run += 1;
        if run > MAX_RUN && text.is_char_boundary(i) {
            run = 1;
            return true;
        }
        false
    })
}

/// Tokens of what is sent upstream for a Responses request body. Never panics: a body that
/// is not JSON is counted as plain text.
pub fn count_upstream_body(body: &[u8]) -> u64 {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return count(&String::from_utf8_lossy(body)) as u64;
    };
    let mut n = 0u64;
    if let Some(s) = v.get("instructions").and_then(Value::as_str) {
        n += count(s) as u64;
    }
    if let Some(items) = v.get("input").and_then(Value::as_array) {
        for item in items {
            n += item_tokens(item);
        }
    }
    if let Some(tools) = v.get("tools").and_then(Value::as_array)
        && !tools.is_empty()
    {
        n += count(&serde_json::to_string(tools).unwrap_or_default()) as u64;
    }
    n
}

fn str_tokens(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_str).map_or(0, |s| count(s) as u64)
}

fn item_tokens(item: &Value) -> u64 {
    match item.get("type").and_then(Value::as_str) {
        Some("function_call") | Some("custom_tool_call") => {
            str_tokens(item.get("name"))
                + str_tokens(item.get("arguments"))
                + str_tokens(item.get("input"))
        }
        Some("function_call_output") | Some("custom_tool_call_output") => {
            match item.get("output") {
                Some(Value::String(s)) => count(s) as u64,
                Some(Value::Array(parts)) => parts.iter().map(part_tokens).sum(),
                _ => 0,
            }
        }
        Some("reasoning") => item
            .get("summary")
            .and_then(Value::as_array)
            .map_or(0, |parts| {
                parts.iter().map(|p| str_tokens(p.get("text"))).sum()
            }),
        _ => match item.get("content") {
            Some(Value::String(s)) => count(s) as u64,
            Some(Value::Array(parts)) => parts.iter().map(part_tokens).sum(),
            _ => 0,
        },
    }
}

fn part_tokens(part: &Value) -> u64 {
    match part.get("type").and_then(Value::as_str) {
        Some("input_image") => IMAGE_TOKENS,
        // A PDF page costs roughly an image plus its text; without parsing the file, charge
        // by size (base64 bytes → raw bytes → about one token per 6 raw bytes).
        Some("input_file") => part
            .get("file_data")
            .and_then(Value::as_str)
            .map_or(IMAGE_TOKENS, |d| (d.len() as u64 * 3 / 4) / 6),
        _ => str_tokens(part.get("text")) + str_tokens(part.get("refusal")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_unbroken_runs_are_cut_and_counted_within_one_token_per_cut() {
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(2000);
        assert_eq!(cuts(&prose).count(), 0, "ordinary text is never cut");
        assert_eq!(count(&prose), bpe().unwrap().encode_ordinary(&prose).len());
        // 64 KiB of one letter, of spaces and of multi-byte chars: cut, counted close to exact.
        for run in ["a".repeat(65_536), " ".repeat(65_536), "é".repeat(32_768)] {
            let n_cuts = cuts(&run).count();
            assert!(n_cuts >= 15, "{n_cuts}");
            assert!(cuts(&run).all(|c| run.is_char_boundary(c)));
            let exact = bpe().unwrap().encode_ordinary(&run).len();
            assert!(
                count(&run).abs_diff(exact) <= n_cuts,
                "{} vs {exact}",
                count(&run)
            );
        }
    }

    #[test]
    fn count_is_exact_o200k() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        // Special-token text is ordinary text here, never a panic.
        assert!(count("<|endoftext|>") > 1);
    }

    #[test]
    fn upstream_body_counts_texts_outputs_tools_and_images() {
        let body = br#"{"model":"m","instructions":"You are terse.","input":[
            {"type":"message","role":"user","content":[{"type":"input_text","text":"hello world"},{"type":"input_image","image_url":"data:image/png;base64,AAAA","detail":"auto"}]},
            {"type":"function_call","call_id":"c","name":"Bash","arguments":"{\"command\":\"ls\"}"},
            {"type":"function_call_output","call_id":"c","output":"a.txt"}],
            "tools":[{"type":"function","name":"Bash","parameters":{}}]}"#;
        let n = count_upstream_body(body);
        let tools = count(r#"[{"type":"function","name":"Bash","parameters":{}}]"#) as u64;
        let expected = count("You are terse.") as u64
            + count("hello world") as u64
            + IMAGE_TOKENS
            + count("Bash") as u64
            + count(r#"{"command":"ls"}"#) as u64
            + count("a.txt") as u64
            + tools;
        assert_eq!(n, expected);
    }

    #[test]
    fn bad_input_never_panics() {
        assert!(count_upstream_body(b"{not json") > 0);
        assert_eq!(count_upstream_body(b""), 0);
        assert_eq!(count_upstream_body(b"[1,2]"), 0);
        assert_eq!(count_upstream_body(br#"{"input":[1,null,{"type":7}]}"#), 0);
        assert!(count_upstream_body(&[0xff, 0xfe, b'a']) > 0);
    }
}
