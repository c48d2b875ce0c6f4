//! The model catalog: which backend models exist, their windows, reasoning levels and
//! request layout.
//!
//! Owns: the built-in fallback catalog, parsing the backend's `/codex/models` reply
//! (codex-backend.md §15) into the same shape, model lookup, and clamping a requested
//! reasoning effort to what a model supports. Fetching and caching the live catalog is
//! `server::backend`'s job.

/// Reasoning levels from lowest to highest.
pub const EFFORTS: [&str; 8] = [
    "none", "minimal", "low", "medium", "high", "xhigh", "max", "ultra",
];

fn rank(effort: &str) -> Option<usize> {
    EFFORTS.iter().position(|e| *e == effort)
}

/// One backend model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    pub slug: String,
    pub display_name: String,
    pub description: String,
    pub context_window: u64,
    /// Supported efforts, lowest first.
    pub efforts: Vec<String>,
    pub default_effort: String,
    pub supports_verbosity: bool,
    pub service_tiers: Vec<String>,
    pub image_detail_original: bool,
    pub priority: i64,
    pub visible: bool,
    /// `use_responses_lite`: requests use the "Responses lite" layout (§7.1).
    pub responses_lite: bool,
}

impl ModelInfo {
    fn builtin(
        slug: &str,
        name: &str,
        window: u64,
        efforts: &[&str],
        priority: i64,
        responses_lite: bool,
    ) -> Self {
        ModelInfo {
            slug: slug.to_owned(),
            display_name: name.to_owned(),
            description: String::new(),
            context_window: window,
            efforts: efforts.iter().map(|e| (*e).to_owned()).collect(),
            default_effort: "medium".to_owned(),
            supports_verbosity: true,
            service_tiers: vec!["priority".to_owned()],
            image_detail_original: true,
            priority,
            visible: true,
            responses_lite,
        }
    }

    fn from_backend(m: &serde_json::Value) -> Option<ModelInfo> {
        let text = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let slug = text("slug");
        if slug.is_empty() {
            return None;
        }
        let mut efforts: Vec<String> = m
            .get("supported_reasoning_levels")
            .and_then(|v| v.as_array())
            .map(|levels| {
                levels
                    .iter()
                    .filter_map(|l| l.get("effort").and_then(|e| e.as_str()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        efforts.sort_by_key(|e| rank(e).unwrap_or(usize::MAX));
        let default_effort = match text("default_reasoning_level") {
            d if d.is_empty() => "medium".to_owned(),
            d => d,
        };
        let display_name = match text("display_name") {
            d if d.is_empty() => slug.clone(),
            d => d,
        };
        let service_tiers = m
            .get("service_tiers")
            .and_then(|v| v.as_array())
            .map(|tiers| {
                tiers
                    .iter()
                    .filter_map(|t| t.get("id").and_then(|i| i.as_str()))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let flag = |k: &str| m.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        Some(ModelInfo {
            description: text("description"),
            display_name,
            context_window: m
                .get("context_window")
                .and_then(|v| v.as_u64())
                .unwrap_or(272_000),
            efforts,
            default_effort,
            supports_verbosity: flag("support_verbosity"),
            service_tiers,
            image_detail_original: flag("supports_image_detail_original"),
            priority: m
                .get("priority")
                .and_then(|v| v.as_i64())
                .unwrap_or(i64::MAX),
            visible: m.get("visibility").and_then(|v| v.as_str()) != Some("hide"),
            responses_lite: flag("use_responses_lite"),
            slug,
        })
    }

    /// The supported effort closest to `requested`: itself if supported, else the highest
    /// supported level below it, else the lowest supported level.
    pub fn clamp_effort(&self, requested: &str) -> String {
        if self.efforts.iter().any(|e| e == requested) {
            return requested.to_owned();
        }
        let Some(want) = rank(requested) else {
            return self.default_effort.clone();
        };
        let mut best: Option<&String> = None;
        for e in &self.efforts {
            if let Some(r) = rank(e)
                && r <= want
            {
                best = Some(e);
            }
        }
        best.or(self.efforts.first())
            .cloned()
            .unwrap_or_else(|| self.default_effort.clone())
    }

    /// The usable window (95 % of the context window, as the official client computes it).
    pub fn usable_window(&self) -> u64 {
        // u128: the window comes from the backend and must not overflow here.
        (u128::from(self.context_window) * 95 / 100) as u64
    }
}

/// The set of backend models.
#[derive(Clone, Debug)]
pub struct Catalog {
    pub models: Vec<ModelInfo>,
}

impl Catalog {
    /// The built-in list used until (or when) the live catalog cannot be fetched.
    pub fn builtin() -> Self {
        // gpt-6.x and gpt-5.6-* use the "Responses lite" layout; gpt-5.5 the classic one.
        let classic = ["low", "medium", "high", "xhigh"];
        let wide = ["low", "medium", "high", "xhigh", "max"];
        Catalog {
            models: vec![
                ModelInfo::builtin("gpt-5.5", "GPT-5.5", 272_000, &classic, 13, false),
                ModelInfo::builtin("gpt-6.1-sol", "GPT-6.1 Sol", 272_000, &wide, 1, true),
                ModelInfo::builtin("gpt-6-sol", "GPT-6 Sol", 272_000, &wide, 2, true),
                ModelInfo::builtin("gpt-6-luna", "GPT-6 Luna", 272_000, &wide, 4, true),
                ModelInfo::builtin("gpt-6.1-terra", "GPT-6.1 Terra", 500_000, &wide, 3, true),
                ModelInfo::builtin("gpt-5.6-sol", "GPT-5.6 Sol", 272_000, &classic, 8, true),
                ModelInfo::builtin("gpt-5.6-terra", "GPT-5.6 Terra", 272_000, &classic, 9, true),
                ModelInfo::builtin("gpt-5.6-luna", "GPT-5.6 Luna", 272_000, &classic, 10, true),
            ],
        }
    }

    /// The catalog from a `GET /codex/models` body (`{"models":[ModelInfo…]}`). Entries
    /// without a slug are skipped; `None` when the body is not a catalog or lists no model.
    pub fn from_backend(body: &[u8]) -> Option<Catalog> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let models: Vec<ModelInfo> = v
            .get("models")?
            .as_array()?
            .iter()
            .filter_map(ModelInfo::from_backend)
            .collect();
        (!models.is_empty()).then_some(Catalog { models })
    }

    pub fn find(&self, slug: &str) -> Option<&ModelInfo> {
        self.models.iter().find(|m| m.slug == slug)
    }

    pub fn is_known(&self, slug: &str) -> bool {
        self.find(slug).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn efforts_clamp_to_the_nearest_supported_level() {
        let c = Catalog::builtin();
        let m = c.find("gpt-5.5").unwrap();
        assert_eq!(m.clamp_effort("high"), "high");
        assert_eq!(m.clamp_effort("none"), "low");
        assert_eq!(m.clamp_effort("minimal"), "low");
        assert_eq!(m.clamp_effort("max"), "xhigh");
        assert_eq!(m.clamp_effort("bogus"), "medium");
        assert_eq!(m.usable_window(), 258_400);
        assert!(!m.responses_lite);
        assert!(c.find("gpt-6.1-sol").unwrap().responses_lite);
        assert!(c.find("gpt-5.6-luna").unwrap().responses_lite);
    }

    #[test]
    fn backend_catalog_is_parsed_with_windows_efforts_and_visibility() {
        let body = br#"{"models":[
            {"slug":"big","display_name":"Big","description":"d","context_window":500000,
             "supported_reasoning_levels":[{"effort":"high"},{"effort":"low"}],
             "default_reasoning_level":"low","visibility":"list","priority":2,
             "service_tiers":[{"id":"priority"}],"support_verbosity":true},
            {"slug":"hidden","visibility":"hide"},
            {"slug":"lite","use_responses_lite":true},
            {"display_name":"no slug"}]}"#;
        let c = Catalog::from_backend(body).unwrap();
        assert_eq!(c.models.len(), 3);
        assert!(c.find("lite").unwrap().responses_lite);
        let big = c.find("big").unwrap();
        assert_eq!(big.context_window, 500_000);
        assert_eq!(big.efforts, ["low", "high"]);
        assert_eq!(big.service_tiers, ["priority"]);
        assert!(big.visible && big.supports_verbosity);
        assert!(!c.find("hidden").unwrap().visible);
        assert!(!big.responses_lite && !c.find("hidden").unwrap().responses_lite);
        assert!(Catalog::from_backend(b"{\"models\":[]}").is_none());
        assert!(Catalog::from_backend(b"<html>").is_none());
    }
}
