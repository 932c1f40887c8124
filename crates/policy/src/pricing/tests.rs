use sluice_types::{Money, Usage};

use super::*;

fn usage(input_tokens: u32, output_tokens: u32) -> Usage {
    Usage {
        input_tokens,
        output_tokens,
        ..Usage::default()
    }
}

fn price(model: &str) -> ModelPrice {
    *PriceTable::builtin()
        .lookup(model)
        .unwrap_or_else(|| panic!("{model} is not priced"))
}

fn input_rate(model: &str) -> i64 {
    price(model).rates.input.0.micros()
}

#[test]
fn finds_dated_snapshots_under_their_model() {
    assert_eq!(price("gpt-4o-2024-08-06"), price("gpt-4o"));
    assert_eq!(price("gpt-4o-mini-2024-07-18"), price("gpt-4o-mini"));
    assert_eq!(input_rate("gpt-4o-mini-2024-07-18"), 150_000);
    assert_eq!(price("gpt-4.1-2025-04-14"), price("gpt-4.1"));
    assert_eq!(price("o3-2025-04-16"), price("o3"));
    assert_eq!(price("gpt-3.5-turbo-0125"), price("gpt-3.5-turbo"));
    assert_eq!(
        price("claude-sonnet-4-5-20250929"),
        price("claude-sonnet-4-5")
    );
    assert_eq!(
        price("claude-sonnet-4-5@20250929"),
        price("claude-sonnet-4-5")
    );
    assert_eq!(
        price("claude-haiku-4-5-20251001"),
        price("claude-haiku-4-5")
    );
    assert_eq!(price("claude-3-5-haiku-latest"), price("claude-3-5-haiku"));
    assert_eq!(
        price("claude-3-7-sonnet-20250219"),
        price("claude-3-7-sonnet")
    );
    assert_eq!(price("claude-3-haiku-20240307"), price("claude-3-haiku"));
}

#[test]
fn an_exact_entry_wins_over_the_model() {
    // The first GPT-4o snapshot kept its launch price.
    assert_eq!(input_rate("gpt-4o-2024-05-13"), 5_000_000);
    assert_eq!(input_rate("gpt-4o"), 2_500_000);
    assert_eq!(input_rate("claude-opus-4-20250514"), 15_000_000);
}

#[test]
fn minor_versions_are_different_models() {
    assert_eq!(input_rate("claude-opus-4-1-20250805"), 15_000_000);
    assert_eq!(input_rate("claude-opus-4-5-20251101"), 5_000_000);
    assert_eq!(input_rate("claude-sonnet-4-20250514"), 3_000_000);
}

#[test]
fn unknown_models_are_not_guessed() {
    let table = PriceTable::builtin();
    assert_eq!(table.lookup("o3-pro"), None);
    assert_eq!(table.lookup("o3-pro-2025-06-10"), None);
    assert_eq!(table.lookup("gpt-4o-realtime-preview"), None);
    assert_eq!(table.lookup("llama-3.1-70b"), None);
}

#[test]
fn costs_input_and_output_at_list_price() {
    // 1,000 x $2.50/M + 500 x $10/M = $0.0025 + $0.005.
    assert_eq!(
        price("gpt-4o").cost(&usage(1_000, 500), Tier::Standard),
        Money::from_micros(7_500)
    );
    // One million embedding tokens at $0.02/M.
    assert_eq!(
        price("text-embedding-3-small").cost(&usage(1_000_000, 0), Tier::Standard),
        Money::from_micros(20_000)
    );
}

#[test]
fn rounds_up_to_a_whole_micro_dollar_once_per_request() {
    let mini = price("gpt-4o-mini");
    // 0.15 micro-USD.
    assert_eq!(
        mini.cost(&usage(1, 0), Tier::Standard),
        Money::from_micros(1)
    );
    // 7 x 0.15 = 1.05, not 7 x 1.
    assert_eq!(
        mini.cost(&usage(7, 0), Tier::Standard),
        Money::from_micros(2)
    );
    // 20 x 0.15 = 3 exactly: no rounding.
    assert_eq!(
        mini.cost(&usage(20, 0), Tier::Standard),
        Money::from_micros(3)
    );
    assert_eq!(mini.cost(&usage(0, 0), Tier::Standard), Money::ZERO);
}

#[test]
fn bills_cached_input_at_the_cached_rate() {
    let cached = Usage {
        input_tokens: 10_000,
        cached_input_tokens: 8_000,
        output_tokens: 1_000,
        ..Usage::default()
    };
    // 2,000 x $2 + 8,000 x $0.50 + 1,000 x $8, per million.
    assert_eq!(
        price("gpt-4.1").cost(&cached, Tier::Standard),
        Money::from_micros(16_000)
    );
}

#[test]
fn bills_cache_writes_and_reads_at_their_own_rates() {
    let anthropic = Usage {
        input_tokens: 10_000,
        cache_write_tokens: 6_000,
        cached_input_tokens: 3_000,
        output_tokens: 500,
        estimated: false,
    };
    // 1,000 x $3 + 3,000 x $0.30 + 6,000 x $3.75 + 500 x $15, per million.
    assert_eq!(
        price("claude-sonnet-4-5").cost(&anthropic, Tier::Standard),
        Money::from_micros(3_000 + 900 + 22_500 + 7_500)
    );
}

#[test]
fn inconsistent_usage_never_bills_negative_input() {
    let odd = Usage {
        input_tokens: 100,
        cached_input_tokens: 150,
        ..Usage::default()
    };
    // Only the 150 cached tokens are billed: 150 x $1.25/M = 187.5 micro-USD, rounded up.
    assert_eq!(
        price("gpt-4o").cost(&odd, Tier::Standard),
        Money::from_micros(188)
    );
}

#[test]
fn batch_halves_every_token() {
    let gpt_4o = price("gpt-4o");
    assert_eq!(
        gpt_4o.cost(&usage(1_000, 500), Tier::Batch),
        Money::from_micros(3_750)
    );
    // 0.075 micro-USD still rounds up to one.
    assert_eq!(
        price("gpt-4o-mini").cost(&usage(1, 0), Tier::Batch),
        Money::from_micros(1)
    );
    let cached = Usage {
        input_tokens: 2_000,
        cached_input_tokens: 2_000,
        ..Usage::default()
    };
    assert_eq!(
        price("claude-haiku-4-5").cost(&cached, Tier::Batch),
        Money::from_micros(100)
    );
}

#[test]
fn long_prompts_switch_the_whole_request_to_long_context_rates() {
    let sonnet = price("claude-sonnet-4-5-20250929");
    assert_eq!(
        sonnet.cost(&usage(200_000, 1_000), Tier::Standard),
        Money::from_micros(600_000 + 15_000)
    );
    assert_eq!(
        sonnet.cost(&usage(200_001, 1_000), Tier::Standard),
        Money::from_micros(1_200_006 + 22_500)
    );
    // Models without a long-context tier keep their rates.
    assert_eq!(
        price("claude-3-7-sonnet").cost(&usage(200_001, 0), Tier::Standard),
        Money::from_micros(600_003)
    );
}

#[test]
fn worst_case_assumes_every_input_token_is_a_cache_write() {
    let sonnet = price("claude-sonnet-4-5");
    assert_eq!(
        sonnet.worst_case(1_000, 4_096),
        Money::from_micros(3_750 + 61_440)
    );
    assert_eq!(
        price("gpt-4o").worst_case(1_000, 500),
        Money::from_micros(7_500)
    );
    assert_eq!(sonnet.worst_case(300_000, 0), Money::from_micros(2_250_000));
}

#[test]
fn worst_case_bounds_every_actual_cost() {
    let table = PriceTable::builtin();
    for (model, price) in table.entries() {
        for (input, max_output) in [
            (0, 0),
            (1, 1),
            (999, 4_096),
            (200_000, 8_192),
            (250_000, 100),
        ] {
            let bound = price.worst_case(input, max_output);
            for (cached, written, output) in [
                (0, 0, max_output),
                (input / 2, 0, max_output / 2),
                (0, input, max_output),
                (input / 3, input / 3, 0),
            ] {
                let actual = Usage {
                    input_tokens: input,
                    cached_input_tokens: cached,
                    cache_write_tokens: written,
                    output_tokens: output,
                    estimated: false,
                };
                for tier in [Tier::Standard, Tier::Batch] {
                    assert!(
                        price.cost(&actual, tier) <= bound,
                        "{model}: {actual:?} at {tier:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn overrides_replace_and_add_entries() {
    let custom = ModelPrice::with_cached_input(1_000_000, 100_000, 2_000_000);
    let table = PriceTable::with_overrides([
        ("GPT-4o".to_owned(), custom),
        ("my-finetune".to_owned(), custom),
    ])
    .unwrap();
    assert_eq!(table.lookup("gpt-4o-2024-08-06"), Some(&custom));
    assert_eq!(table.lookup("my-finetune"), Some(&custom));
    // A snapshot with its own entry keeps it.
    assert_eq!(
        table
            .lookup("gpt-4o-2024-05-13")
            .map(|price| price.rates.input.0.micros()),
        Some(5_000_000)
    );
    // Everything else is still the built-in table.
    assert_eq!(table.lookup("o3"), PriceTable::builtin().lookup("o3"));
}

#[test]
fn rejects_overrides_that_cannot_be_charged() {
    let mut over_discounted = ModelPrice::with_cached_input(1, 1, 1);
    over_discounted.batch_discount_percent = 101;
    let negative = ModelPrice::with_cached_input(-1, 0, 1);
    let zero_threshold = ModelPrice::with_cached_input(1, 1, 1)
        .with_long_context(0, ModelPrice::with_cached_input(2, 2, 2).rates);
    for (price, expected) in [
        (over_discounted, PriceProblem::DiscountAbove100),
        (negative, PriceProblem::NegativeRate),
        (zero_threshold, PriceProblem::ZeroLongContextThreshold),
    ] {
        let result = PriceTable::with_overrides([("m".to_owned(), price)]);
        assert!(
            matches!(&result, Err(PolicyError::InvalidPrice { model, problem }) if model == "m" && *problem == expected),
            "{result:?}"
        );
    }
}

#[test]
fn the_builtin_table_is_consistent() {
    let date = PRICES_AS_OF.as_bytes();
    assert!(date.len() == 10 && date[4] == b'-' && date[7] == b'-');
    for (model, price) in PriceTable::builtin().entries() {
        let rates = price.rates;
        assert_eq!(price.batch_discount_percent, 50, "{model}");
        assert!(
            rates.cached_input <= rates.input,
            "{model}: cache reads cost less"
        );
        assert!(
            rates.cache_write >= rates.input,
            "{model}: cache writes cost at least input"
        );
        if !model.starts_with("text-embedding") {
            assert!(
                rates.output > rates.input,
                "{model}: output costs more than input"
            );
        }
        assert!(price.validate(model).is_ok(), "{model}");
    }
}

#[test]
fn lists_every_required_model() {
    let table = PriceTable::builtin();
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "o1",
        "gpt-3.5-turbo",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-opus-4-1-20250805",
        "claude-opus-4-20250514",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-20250514",
        "claude-3-7-sonnet-20250219",
        "claude-haiku-4-5-20251001",
        "claude-3-5-haiku-20241022",
        "claude-3-haiku-20240307",
    ] {
        assert!(table.lookup(model).is_some(), "{model}");
    }
}
