//! The model catalog (§15): the `GET /codex/models` body with its ETag, and the facts
//! `/responses` checks against it (known slugs, reasoning efforts, service tiers).

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What the rules need to know about one model.
pub(super) struct Model {
    pub(super) slug: &'static str,
    pub(super) efforts: &'static [&'static str],
    pub(super) service_tiers: &'static [&'static str],
    /// `use_responses_lite`: the official client sends no `instructions` (§7.1).
    pub(super) lite: bool,
}

/// The catalog, serialized once.
pub(super) struct Catalog {
    pub(super) models: Vec<Model>,
    pub(super) body: Bytes,
    pub(super) etag: String,
}

struct Spec {
    slug: &'static str,
    display: &'static str,
    description: &'static str,
    efforts: &'static [&'static str],
    default_effort: &'static str,
    context: u64,
    priority: u64,
    lite: bool,
    visibility: &'static str,
}

const BASE_INSTRUCTIONS: &str = "You are Codex, a coding agent based on GPT-5. You and the user share the same workspace and collaborate to achieve the user's goals.";

const SPECS: &[Spec] = &[
    Spec {
        slug: "gpt-6.1-sol",
        display: "GPT-6.1 Sol",
        description: "Latest frontier agentic coding model.",
        efforts: &["low", "medium", "high", "xhigh", "max", "ultra"],
        default_effort: "low",
        context: 272_000,
        priority: 1,
        lite: true,
        visibility: "list",
    },
    Spec {
        slug: "gpt-6.1-terra",
        display: "GPT-6.1 Terra",
        description: "Long-context agentic coding model.",
        efforts: &["low", "medium", "high", "xhigh", "max"],
        default_effort: "low",
        context: 500_000,
        priority: 2,
        lite: true,
        visibility: "list",
    },
    Spec {
        slug: "gpt-6-sol",
        display: "GPT-6 Sol",
        description: "Frontier agentic coding model.",
        efforts: &["low", "medium", "high", "xhigh", "max"],
        default_effort: "low",
        context: 272_000,
        priority: 3,
        lite: true,
        visibility: "list",
    },
    Spec {
        slug: "gpt-6-luna",
        display: "GPT-6 Luna",
        description: "Fast, efficient coding model.",
        efforts: &["low", "medium", "high", "xhigh", "max"],
        default_effort: "low",
        context: 272_000,
        priority: 4,
        lite: true,
        visibility: "list",
    },
    Spec {
        slug: "gpt-5.6-sol",
        display: "GPT-5.6 Sol",
        description: "Previous-generation frontier coding model.",
        efforts: &["low", "medium", "high", "xhigh"],
        default_effort: "medium",
        context: 272_000,
        priority: 8,
        lite: true,
        visibility: "list",
    },
    Spec {
        slug: "gpt-5.6-terra",
        display: "GPT-5.6 Terra",
        description: "Previous-generation balanced coding model.",
        efforts: &["low", "medium", "high", "xhigh"],
        default_effort: "medium",
        context: 400_000,
        priority: 9,
        lite: true,
        visibility: "list",
    },
    Spec {
        slug: "gpt-5.6-luna",
        display: "GPT-5.6 Luna",
        description: "Previous-generation fast coding model.",
        efforts: &["minimal", "low", "medium", "high"],
        default_effort: "medium",
        context: 272_000,
        priority: 10,
        lite: true,
        visibility: "list",
    },
    Spec {
        slug: "gpt-5.5",
        display: "GPT-5.5",
        description: "Legacy coding model.",
        efforts: &["low", "medium", "high", "xhigh"],
        default_effort: "medium",
        context: 272_000,
        priority: 13,
        lite: false,
        visibility: "list",
    },
];

fn effort_description(e: &str) -> &'static str {
    match e {
        "minimal" => "Fastest responses with minimal reasoning",
        "low" => "Fast responses with lighter reasoning",
        "medium" => "Balances speed and reasoning depth for everyday tasks",
        "high" => "Greater reasoning depth for complex problems",
        "xhigh" => "Extra high reasoning depth for complex problems",
        "max" => "Maximum reasoning depth for the hardest problems",
        _ => "Deepest reasoning, slowest responses",
    }
}

fn entry(s: &Spec) -> Value {
    let levels: Vec<Value> = s
        .efforts
        .iter()
        .map(|e| json!({"effort": e, "description": effort_description(e)}))
        .collect();
    json!({
        "slug": s.slug,
        "display_name": s.display,
        "description": s.description,
        "default_reasoning_level": s.default_effort,
        "supported_reasoning_levels": levels,
        "shell_type": "unified_exec",
        "visibility": s.visibility,
        "supported_in_api": true,
        "priority": s.priority,
        "additional_speed_tiers": ["fast"],
        "service_tiers": [{"id": "priority", "name": "Fast", "description": "1.5x speed, increased usage"}],
        "availability_nux": null,
        "upgrade": if s.slug == "gpt-5.5" { json!({"model": "gpt-6-sol", "migration_markdown": "GPT-6 Sol is faster and smarter."}) } else { Value::Null },
        "model_messages": {"instructions_template": BASE_INSTRUCTIONS, "approvals": null},
        "base_instructions": BASE_INSTRUCTIONS,
        "default_reasoning_summary": "none",
        "support_verbosity": true,
        "default_verbosity": "low",
        "apply_patch_tool_type": "freeform",
        "web_search_tool_type": "text_and_image",
        "truncation_policy": {"mode": "tokens", "limit": 10000},
        "supports_image_detail_original": true,
        "context_window": s.context,
        "max_context_window": s.context,
        "effective_context_window_percent": 95,
        "comp_hash": "2911",
        "experimental_supported_tools": [],
        "input_modalities": ["text", "image"],
        "supports_search_tool": true,
        "supports_parallel_tool_calls": !s.lite,
        "supports_reasoning_summaries": true,
        "use_responses_lite": s.lite,
        "minimal_client_version": "0.120.0",
    })
}

impl Catalog {
    pub(super) fn build() -> Catalog {
        let entries: Vec<Value> = SPECS.iter().map(entry).collect();
        let body = Bytes::from(json!({ "models": entries }).to_string());
        let digest = Sha256::digest(&body);
        let etag = format!(
            "W/\"{}\"",
            digest
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let models = SPECS
            .iter()
            .map(|s| Model {
                slug: s.slug,
                efforts: s.efforts,
                service_tiers: &["priority"],
                lite: s.lite,
            })
            .collect();
        Catalog { models, body, etag }
    }

    pub(super) fn find(&self, slug: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.slug == slug)
    }
}
