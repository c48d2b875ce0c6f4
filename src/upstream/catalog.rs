//! The model catalog: which backend models exist, their windows and reasoning levels.
//!
//! Owns: the built-in fallback catalog, model lookup, mapping a client's model name to a
//! backend slug, and clamping a requested reasoning effort to what a model supports.

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
    pub context_window: u64,
    /// Supported efforts, lowest first.
    pub efforts: Vec<String>,
    pub default_effort: String,
    pub supports_verbosity: bool,
    pub service_tiers: Vec<String>,
    pub image_detail_original: bool,
    pub priority: i64,
    pub visible: bool,
}

impl ModelInfo {
    fn builtin(slug: &str, name: &str, window: u64, efforts: &[&str], priority: i64) -> Self {
        ModelInfo {
            slug: slug.to_owned(),
            display_name: name.to_owned(),
            context_window: window,
            efforts: efforts.iter().map(|e| (*e).to_owned()).collect(),
            default_effort: "medium".to_owned(),
            supports_verbosity: true,
            service_tiers: vec!["priority".to_owned()],
            image_detail_original: true,
            priority,
            visible: true,
        }
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
        self.context_window * 95 / 100
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
        let classic = ["low", "medium", "high", "xhigh"];
        let wide = ["low", "medium", "high", "xhigh", "max"];
        Catalog {
            models: vec![
                ModelInfo::builtin("gpt-5.5", "GPT-5.5", 272_000, &classic, 13),
                ModelInfo::builtin("gpt-6.1-sol", "GPT-6.1 Sol", 272_000, &wide, 1),
                ModelInfo::builtin("gpt-6-sol", "GPT-6 Sol", 272_000, &wide, 2),
                ModelInfo::builtin("gpt-6-luna", "GPT-6 Luna", 272_000, &wide, 4),
                ModelInfo::builtin("gpt-6.1-terra", "GPT-6.1 Terra", 500_000, &wide, 3),
                ModelInfo::builtin("gpt-5.6-sol", "GPT-5.6 Sol", 272_000, &classic, 8),
                ModelInfo::builtin("gpt-5.6-terra", "GPT-5.6 Terra", 272_000, &classic, 9),
                ModelInfo::builtin("gpt-5.6-luna", "GPT-5.6 Luna", 272_000, &classic, 10),
            ],
        }
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
    }
}
