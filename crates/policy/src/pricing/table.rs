//! The built-in list prices, in micro-USD per million tokens. Sources, with their dates, are in
//! `docs/cost-energy-carbon.md`; update both together and move [`PRICES_AS_OF`].
//!
//! Entries are model ids as the providers publish them. A dated snapshot gets its own entry
//! only when its price differs from the model's (`gpt-4o-2024-05-13`) or when the provider
//! publishes no undated alias for it (`claude-opus-4-20250514`).

use super::{ModelPrice, Rates, per_mtok};

pub(super) const PRICES_AS_OF: &str = "2026-12-02";

const fn openai(input: i64, cached_input: i64, output: i64) -> ModelPrice {
    ModelPrice::with_cached_input(input, cached_input, output)
}

/// OpenAI models without prompt caching: cached tokens, if ever reported, at the input rate.
const fn openai_uncached(input: i64, output: i64) -> ModelPrice {
    ModelPrice::with_cached_input(input, input, output)
}

const fn anthropic(input: i64, cache_write: i64, cache_read: i64, output: i64) -> ModelPrice {
    ModelPrice::with_cache_rates(input, cache_write, cache_read, output)
}

/// Anthropic bills the whole request at long-context rates once the prompt (cache reads and
/// writes included) exceeds 200K tokens: input and cache rates doubled, output 1.5 times.
const LONG_CONTEXT_ABOVE: u32 = 200_000;

const SONNET_4: ModelPrice = anthropic(3_000_000, 3_750_000, 300_000, 15_000_000)
    .with_long_context(
        LONG_CONTEXT_ABOVE,
        Rates {
            input: per_mtok(6_000_000),
            output: per_mtok(22_500_000),
            cached_input: per_mtok(600_000),
            cache_write: per_mtok(7_500_000),
        },
    );
const SONNET_3_7: ModelPrice = anthropic(3_000_000, 3_750_000, 300_000, 15_000_000);
const OPUS_4_6: ModelPrice = anthropic(5_000_000, 6_250_000, 500_000, 25_000_000)
    .with_long_context(
        LONG_CONTEXT_ABOVE,
        Rates {
            input: per_mtok(10_000_000),
            output: per_mtok(37_500_000),
            cached_input: per_mtok(1_000_000),
            cache_write: per_mtok(12_500_000),
        },
    );
const OPUS_4_5: ModelPrice = anthropic(5_000_000, 6_250_000, 500_000, 25_000_000);
const OPUS_4: ModelPrice = anthropic(15_000_000, 18_750_000, 1_500_000, 75_000_000);
const HAIKU_4_5: ModelPrice = anthropic(1_000_000, 1_250_000, 100_000, 5_000_000);
const HAIKU_3_5: ModelPrice = anthropic(800_000, 1_000_000, 80_000, 4_000_000);
const HAIKU_3: ModelPrice = anthropic(250_000, 300_000, 30_000, 1_250_000);

pub(super) const BUILTIN: &[(&str, ModelPrice)] = &[
    // OpenAI.
    ("gpt-5", openai(1_250_000, 125_000, 10_000_000)),
    ("gpt-5-mini", openai(250_000, 25_000, 2_000_000)),
    ("gpt-5-nano", openai(50_000, 5_000, 400_000)),
    ("gpt-4.1", openai(2_000_000, 500_000, 8_000_000)),
    ("gpt-4.1-mini", openai(400_000, 100_000, 1_600_000)),
    ("gpt-4.1-nano", openai(100_000, 25_000, 400_000)),
    ("gpt-4o", openai(2_500_000, 1_250_000, 10_000_000)),
    // The first GPT-4o snapshot kept its launch price and has no prompt caching.
    ("gpt-4o-2024-05-13", openai_uncached(5_000_000, 15_000_000)),
    ("gpt-4o-mini", openai(150_000, 75_000, 600_000)),
    ("o1", openai(15_000_000, 7_500_000, 60_000_000)),
    ("o1-mini", openai(1_100_000, 550_000, 4_400_000)),
    ("o3", openai(2_000_000, 500_000, 8_000_000)),
    ("o3-mini", openai(1_100_000, 550_000, 4_400_000)),
    ("o4-mini", openai(1_100_000, 275_000, 4_400_000)),
    ("gpt-3.5-turbo", openai_uncached(500_000, 1_500_000)),
    ("text-embedding-3-small", openai_uncached(20_000, 0)),
    ("text-embedding-3-large", openai_uncached(130_000, 0)),
    // Anthropic: 5-minute cache writes (1.25x input), cache reads (0.1x input).
    ("claude-opus-4-6", OPUS_4_6),
    ("claude-opus-4-5", OPUS_4_5),
    ("claude-opus-4-1", OPUS_4),
    ("claude-opus-4-0", OPUS_4),
    ("claude-opus-4-20250514", OPUS_4),
    ("claude-sonnet-4-6", SONNET_4),
    ("claude-sonnet-4-5", SONNET_4),
    ("claude-sonnet-4-0", SONNET_4),
    ("claude-sonnet-4-20250514", SONNET_4),
    ("claude-3-7-sonnet", SONNET_3_7),
    ("claude-haiku-4-5", HAIKU_4_5),
    ("claude-3-5-haiku", HAIKU_3_5),
    ("claude-3-haiku", HAIKU_3),
];
