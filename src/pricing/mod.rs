//! Prices per model and the cost of one request.
//!
//! Prices are USD per million tokens (input, cached input, output), from the config's
//! `pricing.models` first, then the shipped table `pricing/default.yaml` (compiled in).
//! Costs are integers in **micro-dollars** (1e-6 USD), rounded up per request, so limits
//! arithmetic (here, in the memory store and in Redis' Lua) is exact integer addition.
//!
//! A model with no price costs 0: it is still counted in tokens, and the metric
//! `tollgate_unpriced_requests_total` shows it, so a cost budget cannot be bypassed silently.

use crate::glob::Glob;
use serde::Deserialize;

/// The table shipped with tollgate.
pub const DEFAULT_TABLE: &str = include_str!("../../pricing/default.yaml");

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input (prompt) tokens.
    pub input: f64,
    /// Cached input tokens. Default: the input price.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Output (completion, reasoning included) tokens.
    pub output: f64,
}

/// One entry of a price file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Model name or `*`/`?` glob (catalogue, requested or upstream name).
    pub model: String,
    /// Prices.
    #[serde(flatten)]
    pub price: Price,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    models: Vec<PriceEntry>,
}

/// Token counts a cost is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// All input tokens, cached ones included.
    pub input: u64,
    /// The cached part of `input`.
    pub cached_input: u64,
    /// Output tokens.
    pub output: u64,
}

/// Ordered price rules; the first match wins.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    entries: Vec<(Glob, Price)>,
}

impl Price {
    /// Cost in micro-dollars, rounded up.
    pub fn cost_micros(&self, t: Tokens) -> u64 {
        let cached = t.cached_input.min(t.input);
        let micros = (t.input - cached) as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + t.output as f64 * self.output;
        // tokens × USD/M = micro-USD.
        micros.max(0.0).ceil() as u64
    }

    /// Whether every figure is a finite, non-negative number.
    pub fn is_valid(&self) -> bool {
        [self.input, self.cached_input.unwrap_or(0.0), self.output]
            .iter()
            .all(|p| p.is_finite() && *p >= 0.0)
    }
}

impl PriceTable {
    /// A table from entries (config first, then defaults).
    pub fn new(entries: impl IntoIterator<Item = PriceEntry>) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|e| (Glob::new(&e.model), e.price))
                .collect(),
        }
    }

    /// Parses a price file (the shipped default's format).
    pub fn parse_file(text: &str) -> Result<Vec<PriceEntry>, String> {
        serde_yaml::from_str::<PriceFile>(text)
            .map(|f| f.models)
            .map_err(|e| e.to_string())
    }

    /// The shipped table.
    pub fn defaults() -> Vec<PriceEntry> {
        // The shipped file is checked by a unit test; a broken one yields no prices.
        Self::parse_file(DEFAULT_TABLE).unwrap_or_default()
    }

    /// The price for the first of `names` (most specific first) that some rule matches.
    pub fn lookup(&self, names: &[&str]) -> Option<&Price> {
        self.entries
            .iter()
            .find(|(g, _)| names.iter().any(|n| !n.is_empty() && g.matches(n)))
            .map(|(_, p)| p)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Micro-dollars as a decimal USD string for metadata and logs (`0.000123`).
pub fn usd(micros: u64) -> f64 {
    micros as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_parses_and_prices_common_models() {
        let entries = PriceTable::parse_file(DEFAULT_TABLE).expect("shipped table parses");
        assert!(entries.len() >= 15);
        assert!(entries.iter().all(|e| e.price.is_valid()));
        let t = PriceTable::new(entries);
        let mini = t.lookup(&["gpt-4o-mini-2024-07-18"]).expect("priced");
        assert_eq!(mini.input, 0.15);
        let big = t.lookup(&["gpt-4o"]).expect("priced");
        assert_eq!(
            big.output, 10.0,
            "specific entries come before broader globs"
        );
        assert!(t.lookup(&["my-llama"]).is_none());
    }

    #[test]
    fn cost_is_micro_dollars_rounded_up() {
        let p = Price {
            input: 2.5,
            cached_input: Some(1.25),
            output: 10.0,
        };
        // 1000 input of which 400 cached, 200 output:
        // 600 × 2.5 + 400 × 1.25 + 200 × 10 = 1500 + 500 + 2000 = 4000 µ$.
        let t = Tokens {
            input: 1000,
            cached_input: 400,
            output: 200,
        };
        assert_eq!(p.cost_micros(t), 4000);
        let cheap = Price {
            input: 0.15,
            cached_input: None,
            output: 0.6,
        };
        assert_eq!(
            cheap.cost_micros(Tokens {
                input: 1,
                cached_input: 0,
                output: 0
            }),
            1,
            "a fraction of a micro-dollar rounds up"
        );
        assert_eq!(
            cheap.cost_micros(Tokens {
                input: 10,
                cached_input: 20,
                output: 0
            }),
            2,
            "cached never exceeds input"
        );
        assert_eq!(usd(4000), 0.004);
    }

    #[test]
    fn config_entries_win_over_defaults() {
        let mut entries = vec![PriceEntry {
            model: "gpt-4o".into(),
            price: Price {
                input: 1.0,
                cached_input: None,
                output: 2.0,
            },
        }];
        entries.extend(PriceTable::defaults());
        let t = PriceTable::new(entries);
        assert_eq!(t.lookup(&["gpt-4o"]).map(|p| p.input), Some(1.0));
        assert_eq!(
            t.lookup(&["unknown", "gpt-4o-mini"]).map(|p| p.input),
            Some(0.15)
        );
    }
}
