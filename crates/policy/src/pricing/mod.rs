//! What a request costs: a dated table of list prices per model, overridable from config, and
//! the exact integer arithmetic from [`Usage`] to [`Money`].
//!
//! Owns: the built-in price table ([`PRICES_AS_OF`], sources in `docs/cost-energy-carbon.md`),
//! looking a provider-reported model id up in it (exact id first, then the id without its
//! version stamp: see `model_id`), the cost of a finished request ([`ModelPrice::cost`]) and
//! the worst case a request is admitted against ([`ModelPrice::worst_case`]). Leaves to others:
//! which model a request targets (`sluice-routing`), reading overrides from config
//! (`sluice-config`) and recording the cost (`sluice-pipeline`, `sluice-store`).
//!
//! Rounding: each request's cost is computed exactly in millionths of a micro-USD and rounded
//! up once, to a whole micro-USD, so a request never costs less than its list price.

mod table;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use sluice_types::{Money, Usage};

use crate::error::{PolicyError, PriceProblem};
use crate::model_id;

/// The date the built-in list prices were last checked against the providers' pricing pages.
pub const PRICES_AS_OF: &str = table::PRICES_AS_OF;

/// A price for one million tokens.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct PerMillionTokens(pub Money);

impl PerMillionTokens {
    pub const fn micro_usd(micros: i64) -> PerMillionTokens {
        PerMillionTokens(Money::from_micros(micros))
    }

    fn rate(self) -> u128 {
        u128::try_from(self.0.micros()).unwrap_or(0)
    }
}

/// The service tier a request was billed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Standard,
    /// The provider's batch API: [`ModelPrice::batch_discount_percent`] off every token.
    Batch,
}

/// Rates for one set of token kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rates {
    /// Input tokens neither read from nor written to the prompt cache.
    pub input: PerMillionTokens,
    pub output: PerMillionTokens,
    /// Input tokens read from the prompt cache.
    pub cached_input: PerMillionTokens,
    /// Input tokens written to the prompt cache (Anthropic's 5-minute write; OpenAI charges the
    /// plain input rate).
    pub cache_write: PerMillionTokens,
}

/// Higher rates for a whole request once its prompt is long (Anthropic's 1M-context models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LongContextRates {
    /// The rates apply when `input_tokens` (cached and written tokens included) exceeds this.
    pub above_input_tokens: u32,
    pub rates: Rates,
}

/// The list price of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelPrice {
    pub rates: Rates,
    /// Percent off every token at [`Tier::Batch`]; 50 for OpenAI's and Anthropic's batch APIs.
    pub batch_discount_percent: u8,
    pub long_context: Option<LongContextRates>,
}

/// Micro-USD per million tokens, for table entries.
const fn per_mtok(micros: i64) -> PerMillionTokens {
    PerMillionTokens::micro_usd(micros)
}

impl ModelPrice {
    /// A price with no cache surcharge: cache writes at the input rate (OpenAI's model).
    pub const fn with_cached_input(input: i64, cached_input: i64, output: i64) -> ModelPrice {
        ModelPrice {
            rates: Rates {
                input: per_mtok(input),
                output: per_mtok(output),
                cached_input: per_mtok(cached_input),
                cache_write: per_mtok(input),
            },
            batch_discount_percent: 50,
            long_context: None,
        }
    }

    /// A price with separate cache-write and cache-read rates (Anthropic's model).
    pub const fn with_cache_rates(
        input: i64,
        cache_write: i64,
        cache_read: i64,
        output: i64,
    ) -> ModelPrice {
        ModelPrice {
            rates: Rates {
                input: per_mtok(input),
                output: per_mtok(output),
                cached_input: per_mtok(cache_read),
                cache_write: per_mtok(cache_write),
            },
            batch_discount_percent: 50,
            long_context: None,
        }
    }

    pub const fn with_long_context(mut self, above_input_tokens: u32, rates: Rates) -> ModelPrice {
        self.long_context = Some(LongContextRates {
            above_input_tokens,
            rates,
        });
        self
    }

    fn rates_for(&self, input_tokens: u32) -> &Rates {
        match &self.long_context {
            Some(long) if input_tokens > long.above_input_tokens => &long.rates,
            _ => &self.rates,
        }
    }

    /// What a request with this usage costs, rounded up to a whole micro-USD. `cached_input_tokens`
    /// and `cache_write_tokens` are part of `input_tokens` and billed at their own rates.
    pub fn cost(&self, usage: &Usage, tier: Tier) -> Money {
        let rates = self.rates_for(usage.input_tokens);
        let cached = u128::from(usage.cached_input_tokens);
        let written = u128::from(usage.cache_write_tokens);
        let uncached = u128::from(usage.input_tokens).saturating_sub(cached + written);
        // Micro-USD per million tokens times tokens: millionths of a micro-USD.
        let exact = uncached * rates.input.rate()
            + cached * rates.cached_input.rate()
            + written * rates.cache_write.rate()
            + u128::from(usage.output_tokens) * rates.output.rate();
        let (numerator, denominator) = match tier {
            Tier::Standard => (exact, 1_000_000),
            Tier::Batch => {
                let paid_percent = 100 - u128::from(self.batch_discount_percent.min(100));
                (exact * paid_percent, 100_000_000)
            }
        };
        money_from_micros(numerator.div_ceil(denominator))
    }

    /// The most a request of `input_tokens` (its prompt, counted before sending) and at most
    /// `max_output_tokens` can cost at the standard tier: every input token at the dearer of the
    /// input and cache-write rates, every output token generated. Admission reserves this.
    pub fn worst_case(&self, input_tokens: u32, max_output_tokens: u32) -> Money {
        let rates = self.rates_for(input_tokens);
        let input_rate = rates.input.rate().max(rates.cache_write.rate());
        let exact = u128::from(input_tokens) * input_rate
            + u128::from(max_output_tokens) * rates.output.rate();
        money_from_micros(exact.div_ceil(1_000_000))
    }

    fn validate(&self, model: &str) -> Result<(), PolicyError> {
        let problem = |problem| PolicyError::InvalidPrice {
            model: model.to_owned(),
            problem,
        };
        let negative = |rates: &Rates| {
            [
                rates.input,
                rates.output,
                rates.cached_input,
                rates.cache_write,
            ]
            .iter()
            .any(|rate| rate.0.is_negative())
        };
        if negative(&self.rates) {
            return Err(problem(PriceProblem::NegativeRate));
        }
        if self.batch_discount_percent > 100 {
            return Err(problem(PriceProblem::DiscountAbove100));
        }
        if let Some(long) = &self.long_context {
            if long.above_input_tokens == 0 {
                return Err(problem(PriceProblem::ZeroLongContextThreshold));
            }
            if negative(&long.rates) {
                return Err(problem(PriceProblem::NegativeRate));
            }
        }
        Ok(())
    }
}

fn money_from_micros(micros: u128) -> Money {
    Money::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
}

/// Prices by model id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    prices: HashMap<String, ModelPrice>,
}

impl PriceTable {
    /// The list prices of [`PRICES_AS_OF`].
    pub fn builtin() -> PriceTable {
        PriceTable {
            prices: table::BUILTIN
                .iter()
                .map(|(model, price)| ((*model).to_owned(), *price))
                .collect(),
        }
    }

    /// The built-in prices with entries from config added or replacing them. An override for
    /// `gpt-4o` also prices `gpt-4o-2024-08-06`, unless that snapshot has its own entry.
    pub fn with_overrides(
        overrides: impl IntoIterator<Item = (String, ModelPrice)>,
    ) -> Result<PriceTable, PolicyError> {
        let mut table = PriceTable::builtin();
        for (model, price) in overrides {
            price.validate(&model)?;
            table
                .prices
                .insert(model.trim().to_ascii_lowercase(), price);
        }
        Ok(table)
    }

    /// The price of the model a provider reported: the exact id first, then the id without its
    /// version stamp. `None` for a model the table does not know.
    pub fn lookup(&self, model: &str) -> Option<&ModelPrice> {
        model_id::candidates(model).find_map(|candidate| self.prices.get(&candidate))
    }

    /// Every entry, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.prices
            .iter()
            .map(|(model, price)| (model.as_str(), price))
    }
}
