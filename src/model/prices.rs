//! Model prices, context windows, cache minimums and the cost of a call.
//!
//! The Company spec's `models.prices` is the source of truth; the defaults here only cover
//! current models so a company that declares no table still sees its spending. A declared
//! entry replaces the default for its model, except that a context window or cache minimum it
//! leaves out keeps the default's: those are facts about the model, not about the contract.
//!
//! Defaults for the Claude 4.5 models: a 200,000-token context window; the shortest prefix the
//! API caches is 1,024 tokens for Sonnet 4.5 and 4,096 for Haiku 4.5 and Opus 4.5
//! (Anthropic's prompt-caching documentation, "minimum cacheable prompt length").

use super::Usage;
use crate::spec::Price;

/// Anthropic's cache multipliers, used when a price leaves the cache rates out: writing the
/// 5-minute cache costs 1.25× input, reading it 0.1×.
const CACHE_WRITE_FACTOR: f64 = 1.25;
const CACHE_READ_FACTOR: f64 = 0.10;

/// The context window of the current Claude models, in tokens.
const CLAUDE_CONTEXT: u64 = 200_000;

fn price(
    model: &str,
    [input, output, cache_write, cache_read]: [f64; 4],
    cache_min_tokens: u64,
) -> Price {
    Price {
        model: model.to_string(),
        input,
        output,
        cache_write: Some(cache_write),
        cache_read: Some(cache_read),
        context_window: Some(CLAUDE_CONTEXT),
        cache_min_tokens: Some(cache_min_tokens),
    }
}

/// Prices in USD per million tokens (input, output, cache write, cache read), context
/// windows and cache minimums for current models.
pub fn default_prices() -> Vec<Price> {
    vec![
        price("claude-haiku-4-5", [1.0, 5.0, 1.25, 0.10], 4096),
        price("claude-sonnet-4-5", [3.0, 15.0, 3.75, 0.30], 1024),
        price("claude-opus-4-5", [5.0, 25.0, 6.25, 0.50], 4096),
    ]
}

/// The dollars `usage` costs at `price`.
pub fn cost(usage: &Usage, price: &Price) -> f64 {
    let cache_write = price
        .cache_write
        .unwrap_or(price.input * CACHE_WRITE_FACTOR);
    let cache_read = price.cache_read.unwrap_or(price.input * CACHE_READ_FACTOR);
    (usage.input_tokens as f64 * price.input
        + usage.output_tokens as f64 * price.output
        + usage.cache_creation_input_tokens as f64 * cache_write
        + usage.cache_read_input_tokens as f64 * cache_read)
        / 1_000_000.0
}

/// The defaults with the Company's prices laid over them.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceTable {
    prices: Vec<Price>,
}

impl Default for PriceTable {
    fn default() -> Self {
        PriceTable {
            prices: default_prices(),
        }
    }
}

impl PriceTable {
    /// The defaults, with each of `overrides` replacing the default for the same model or
    /// adding a new model.
    pub fn new(overrides: &[Price]) -> Self {
        let mut prices = default_prices();
        for o in overrides {
            match prices.iter_mut().find(|p| p.model == o.model) {
                Some(p) => {
                    *p = Price {
                        context_window: o.context_window.or(p.context_window),
                        cache_min_tokens: o.cache_min_tokens.or(p.cache_min_tokens),
                        ..o.clone()
                    }
                }
                None => prices.push(o.clone()),
            }
        }
        PriceTable { prices }
    }

    /// The price for `model`: an exact match, else the longest entry the id starts with, so
    /// a dated id such as `claude-sonnet-4-5-20250929` finds `claude-sonnet-4-5`.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        self.prices.iter().find(|p| p.model == model).or_else(|| {
            self.prices
                .iter()
                .filter(|p| model.starts_with(&p.model))
                .max_by_key(|p| p.model.len())
        })
    }

    /// The cost of `usage` on `model`; `None` when the model has no price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.lookup(model).map(|p| cost(usage, p))
    }

    /// The context window of `model` in tokens, when the table knows it.
    pub fn context_window(&self, model: &str) -> Option<u64> {
        self.lookup(model).and_then(|p| p.context_window)
    }

    /// The shortest prefix `model` caches, in tokens, when the table knows it.
    pub fn cache_min_tokens(&self, model: &str) -> Option<u64> {
        self.lookup(model).and_then(|p| p.cache_min_tokens)
    }

    pub fn prices(&self) -> &[Price] {
        &self.prices
    }
}
