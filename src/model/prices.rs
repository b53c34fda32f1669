//! Model prices and the cost of a call.
//!
//! The Company spec's `models.prices` is the source of truth; the defaults here only cover
//! current models so a company that declares no table still sees its spending.

use super::Usage;
use crate::spec::Price;

/// Anthropic's cache multipliers, used when a price leaves the cache rates out: writing the
/// 5-minute cache costs 1.25× input, reading it 0.1×.
const CACHE_WRITE_FACTOR: f64 = 1.25;
const CACHE_READ_FACTOR: f64 = 0.10;

fn price(model: &str, input: f64, output: f64, cache_write: f64, cache_read: f64) -> Price {
    Price {
        model: model.to_string(),
        input,
        output,
        cache_write: Some(cache_write),
        cache_read: Some(cache_read),
    }
}

/// Prices in USD per million tokens for current models.
pub fn default_prices() -> Vec<Price> {
    vec![
        price("claude-haiku-4-5", 1.0, 5.0, 1.25, 0.10),
        price("claude-sonnet-4-5", 3.0, 15.0, 3.75, 0.30),
        price("claude-opus-4-5", 5.0, 25.0, 6.25, 0.50),
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
                Some(p) => *p = o.clone(),
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

    pub fn prices(&self) -> &[Price] {
        &self.prices
    }
}
