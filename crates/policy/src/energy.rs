//! Estimated energy and carbon of a request, from its tokens.
//!
//! Owns: per-model energy coefficients (micro-Wh per 1,000 input and per 1,000 output tokens,
//! by size class), grid carbon intensity per provider region (gCO2e/kWh), the data-centre PUE,
//! and the integer arithmetic from [`Usage`] to an [`Estimate`]. Every figure is an estimate:
//! providers publish no per-model energy, so the coefficients are derived from published
//! estimates (method, sources and uncertainty in `docs/cost-energy-carbon.md`). Leaves to
//! others: which region a deployment runs in (`sluice-config`), recording estimates and summing
//! them into kWh and kgCO2e per 1,000 requests per team and feature (`sluice-store`, reports).
//!
//! Units are integers so that sums over millions of requests are exact: micro-Wh of energy and
//! micro-grams of CO2e. Each request is rounded to the nearest unit once.

use std::collections::HashMap;
use std::fmt;

use sluice_types::Usage;

use crate::model_id;

/// Energy per 1,000 tokens at the servers (IT energy, before PUE), in micro-Wh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnergyCoefficients {
    pub input_uwh_per_1k: u64,
    pub output_uwh_per_1k: u64,
}

/// Models grouped by (undisclosed) size, each with class coefficients.
///
/// The large and small classes are Epoch AI's estimates for GPT-4o (about 100B active
/// parameters) and GPT-4o mini (about 20B): 2 FLOP per active parameter per token on an H100 at
/// 10% utilisation and 70% of its 1,275 W server share, 0.50 Wh and 0.10 Wh per 1,000 output
/// tokens before PUE. Medium (about 50B) and frontier (about 200B) scale the same formula. Input
/// tokens take a quarter of the output energy: the same FLOP per token, processed in parallel
/// at several times the utilisation. Embedding models are given the small class's input figure,
/// an upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeClass {
    Embedding,
    Small,
    Medium,
    Large,
    Frontier,
}

impl SizeClass {
    pub const fn coefficients(self) -> EnergyCoefficients {
        let (input_uwh_per_1k, output_uwh_per_1k) = match self {
            SizeClass::Embedding => (25_000, 0),
            SizeClass::Small => (25_000, 100_000),
            SizeClass::Medium => (62_500, 250_000),
            SizeClass::Large => (125_000, 500_000),
            SizeClass::Frontier => (250_000, 1_000_000),
        };
        EnergyCoefficients {
            input_uwh_per_1k,
            output_uwh_per_1k,
        }
    }
}

/// The class of each built-in model, by its provider's list price as a proxy for size: output
/// under $1.50 per million tokens small, under $8 medium, under $25 large, $25 and up frontier.
const MODEL_CLASSES: &[(&str, SizeClass)] = &[
    ("gpt-5", SizeClass::Large),
    ("gpt-5-mini", SizeClass::Medium),
    ("gpt-5-nano", SizeClass::Small),
    ("gpt-4.1", SizeClass::Large),
    ("gpt-4.1-mini", SizeClass::Medium),
    ("gpt-4.1-nano", SizeClass::Small),
    ("gpt-4o", SizeClass::Large),
    ("gpt-4o-mini", SizeClass::Small),
    ("o1", SizeClass::Frontier),
    ("o1-mini", SizeClass::Medium),
    ("o3", SizeClass::Large),
    ("o3-mini", SizeClass::Medium),
    ("o4-mini", SizeClass::Medium),
    ("gpt-3.5-turbo", SizeClass::Medium),
    ("text-embedding-3-small", SizeClass::Embedding),
    ("text-embedding-3-large", SizeClass::Embedding),
    ("claude-opus-4-6", SizeClass::Frontier),
    ("claude-opus-4-5", SizeClass::Frontier),
    ("claude-opus-4-1", SizeClass::Frontier),
    ("claude-opus-4-0", SizeClass::Frontier),
    ("claude-opus-4-20250514", SizeClass::Frontier),
    ("claude-sonnet-4-6", SizeClass::Large),
    ("claude-sonnet-4-5", SizeClass::Large),
    ("claude-sonnet-4-0", SizeClass::Large),
    ("claude-sonnet-4-20250514", SizeClass::Large),
    ("claude-3-7-sonnet", SizeClass::Large),
    ("claude-haiku-4-5", SizeClass::Medium),
    ("claude-3-5-haiku", SizeClass::Medium),
    ("claude-3-haiku", SizeClass::Small),
];

/// Location-based grid carbon intensity, gCO2e/kWh, by provider region. Google Cloud's
/// published 2024 figures for the region's grid (us-east: Northern Virginia, us-central: Iowa,
/// us-west: Oregon, eu-central: Frankfurt, eu-north: Finland, asia-northeast: Tokyo,
/// asia-southeast: Singapore); eu-west is Ireland's 2023 grid (Ember).
const REGION_INTENSITY: &[(&str, u32)] = &[
    ("us-east", 323),
    ("us-central", 413),
    ("us-west", 79),
    ("eu-west", 291),
    ("eu-central", 276),
    ("eu-north", 39),
    ("asia-northeast", 453),
    ("asia-southeast", 367),
];

/// The world's average electricity in 2023 (Ember): used for an unknown or unnamed region.
pub const WORLD_AVERAGE_INTENSITY: u32 = 481;

/// Epoch AI's data-centre overhead for AI inference (SemiAnalysis gives 1.1 to 1.3), in
/// thousandths.
pub const DEFAULT_PUE_MILLI: u32 = 1_200;

/// Where an estimate's coefficients came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoefficientSource {
    /// The model's entry (built in or overridden).
    Model,
    /// The model is unknown; the default class was assumed.
    AssumedClass(SizeClass),
}

/// Energy and carbon of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Facility energy (PUE included), in micro-Wh.
    pub energy_uwh: u64,
    /// Location-based emissions, in micro-grams of CO2e.
    pub carbon_ug: u64,
    pub source: CoefficientSource,
}

impl Estimate {
    /// Sums for reports; saturates instead of wrapping.
    pub fn saturating_add(self, other: Estimate) -> Estimate {
        Estimate {
            energy_uwh: self.energy_uwh.saturating_add(other.energy_uwh),
            carbon_ug: self.carbon_ug.saturating_add(other.carbon_ug),
            source: self.source,
        }
    }
}

/// `0.600000 Wh, 0.193800 gCO2e`.
impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06} Wh, {}.{:06} gCO2e",
            self.energy_uwh / 1_000_000,
            self.energy_uwh % 1_000_000,
            self.carbon_ug / 1_000_000,
            self.carbon_ug % 1_000_000
        )
    }
}

/// Coefficients, grid intensities and PUE, with overrides from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnergyModel {
    models: HashMap<String, EnergyCoefficients>,
    regions: HashMap<String, u32>,
    default_intensity: u32,
    pue_milli: u32,
    unknown_model_class: SizeClass,
}

impl Default for EnergyModel {
    fn default() -> Self {
        EnergyModel::builtin()
    }
}

impl EnergyModel {
    /// Built-in classes and regions, world-average intensity for unknown regions, PUE 1.2, and
    /// the large class for unknown models.
    pub fn builtin() -> EnergyModel {
        EnergyModel {
            models: MODEL_CLASSES
                .iter()
                .map(|(model, class)| ((*model).to_owned(), class.coefficients()))
                .collect(),
            regions: REGION_INTENSITY
                .iter()
                .map(|(region, intensity)| ((*region).to_owned(), *intensity))
                .collect(),
            default_intensity: WORLD_AVERAGE_INTENSITY,
            pue_milli: DEFAULT_PUE_MILLI,
            unknown_model_class: SizeClass::Large,
        }
    }

    /// Adds or replaces per-model coefficients (same id matching as prices).
    pub fn with_model_overrides(
        mut self,
        overrides: impl IntoIterator<Item = (String, EnergyCoefficients)>,
    ) -> EnergyModel {
        for (model, coefficients) in overrides {
            self.models
                .insert(model.trim().to_ascii_lowercase(), coefficients);
        }
        self
    }

    /// Adds or replaces region intensities, gCO2e/kWh.
    pub fn with_region_overrides(
        mut self,
        overrides: impl IntoIterator<Item = (String, u32)>,
    ) -> EnergyModel {
        for (region, intensity) in overrides {
            self.regions
                .insert(region.trim().to_ascii_lowercase(), intensity);
        }
        self
    }

    /// The intensity for regions not in the table (default: the world average).
    pub fn with_default_intensity(mut self, intensity: u32) -> EnergyModel {
        self.default_intensity = intensity;
        self
    }

    /// PUE in thousandths (1,200 is 1.2).
    pub fn with_pue_milli(mut self, pue_milli: u32) -> EnergyModel {
        self.pue_milli = pue_milli;
        self
    }

    /// The class assumed for a model the table does not know.
    pub fn with_unknown_model_class(mut self, class: SizeClass) -> EnergyModel {
        self.unknown_model_class = class;
        self
    }

    /// The model's coefficients, if the table knows it.
    pub fn coefficients(&self, model: &str) -> Option<EnergyCoefficients> {
        model_id::candidates(model).find_map(|candidate| self.models.get(&candidate).copied())
    }

    /// gCO2e/kWh of a region; the default for an unknown or missing region.
    pub fn intensity(&self, region: Option<&str>) -> u32 {
        region
            .and_then(|region| self.regions.get(&region.trim().to_ascii_lowercase()))
            .copied()
            .unwrap_or(self.default_intensity)
    }

    /// The estimate for one request to `model` in `region`. Cached input tokens are counted as
    /// input: a cache hit saves compute, but by how much is not published.
    pub fn estimate(&self, model: &str, usage: &Usage, region: Option<&str>) -> Estimate {
        let (coefficients, source) = match self.coefficients(model) {
            Some(coefficients) => (coefficients, CoefficientSource::Model),
            None => (
                self.unknown_model_class.coefficients(),
                CoefficientSource::AssumedClass(self.unknown_model_class),
            ),
        };
        let it_energy = u128::from(usage.input_tokens) * u128::from(coefficients.input_uwh_per_1k)
            + u128::from(usage.output_tokens) * u128::from(coefficients.output_uwh_per_1k);
        // Tokens per 1,000 times PUE per 1,000.
        let energy_uwh = divide_rounding(it_energy * u128::from(self.pue_milli), 1_000_000);
        // 1 kWh is 10^9 micro-Wh and 1 g is 10^6 micro-g: micro-g = micro-Wh * (g/kWh) / 10^3.
        let carbon_ug = divide_rounding(
            u128::from(energy_uwh) * u128::from(self.intensity(region)),
            1_000,
        );
        Estimate {
            energy_uwh,
            carbon_ug,
            source,
        }
    }
}

/// `numerator / denominator`, rounded half up, saturating at `u64::MAX`.
fn divide_rounding(numerator: u128, denominator: u128) -> u64 {
    let rounded = (numerator + denominator / 2) / denominator;
    u64::try_from(rounded).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input_tokens: u32, output_tokens: u32) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    #[test]
    fn gpt_4o_output_matches_epochs_estimate() {
        // Epoch AI: about 0.3 Wh for a GPT-4o answer of 500 tokens, PUE 1.2 included.
        let model = EnergyModel::builtin();
        let estimate = model.estimate("gpt-4o-2024-08-06", &usage(0, 500), Some("us-east"));
        assert_eq!(estimate.energy_uwh, 300_000);
        assert_eq!(estimate.source, CoefficientSource::Model);
    }

    #[test]
    fn carbon_is_energy_times_grid_intensity() {
        let model = EnergyModel::builtin();
        let estimate = model.estimate("gpt-4o", &usage(0, 1_000), Some("us-east"));
        // 0.5 Wh at the servers, times PUE 1.2: 0.6 Wh; at 323 g/kWh: 0.1938 g.
        assert_eq!(estimate.energy_uwh, 600_000);
        assert_eq!(estimate.carbon_ug, 193_800);
        assert_eq!(estimate.to_string(), "0.600000 Wh, 0.193800 gCO2e");
    }

    #[test]
    fn input_tokens_cost_a_quarter_of_output_tokens() {
        let model = EnergyModel::builtin();
        let input = model.estimate("claude-sonnet-4-5-20250929", &usage(4_000, 0), None);
        let output = model.estimate("claude-sonnet-4-5-20250929", &usage(0, 1_000), None);
        assert_eq!(input.energy_uwh, output.energy_uwh);
    }

    #[test]
    fn cleaner_grids_emit_less_for_the_same_energy() {
        let model = EnergyModel::builtin();
        let virginia = model.estimate("gpt-4.1", &usage(1_000, 1_000), Some("us-east"));
        let finland = model.estimate("gpt-4.1", &usage(1_000, 1_000), Some("eu-north"));
        assert_eq!(virginia.energy_uwh, finland.energy_uwh);
        assert_eq!(virginia.energy_uwh, 750_000);
        assert_eq!(virginia.carbon_ug, 750_000 * 323 / 1_000);
        assert_eq!(finland.carbon_ug, 750_000 * 39 / 1_000);
    }

    #[test]
    fn unknown_region_uses_the_world_average() {
        let model = EnergyModel::builtin();
        let estimate = model.estimate("gpt-4o", &usage(0, 1_000), Some("mars-1"));
        assert_eq!(model.intensity(Some("mars-1")), WORLD_AVERAGE_INTENSITY);
        assert_eq!(model.intensity(None), WORLD_AVERAGE_INTENSITY);
        assert_eq!(estimate.carbon_ug, 600_000 * 481 / 1_000);
    }

    #[test]
    fn unknown_model_assumes_the_large_class_and_says_so() {
        let model = EnergyModel::builtin();
        let estimate = model.estimate("some-new-model", &usage(0, 1_000), None);
        assert_eq!(
            estimate.source,
            CoefficientSource::AssumedClass(SizeClass::Large)
        );
        assert_eq!(estimate.energy_uwh, 600_000);
        let small = model.with_unknown_model_class(SizeClass::Small);
        assert_eq!(
            small
                .estimate("some-new-model", &usage(0, 1_000), None)
                .energy_uwh,
            120_000
        );
    }

    #[test]
    fn overrides_replace_models_regions_and_pue() {
        let model = EnergyModel::builtin()
            .with_model_overrides([(
                "gpt-4o".to_owned(),
                EnergyCoefficients {
                    input_uwh_per_1k: 0,
                    output_uwh_per_1k: 1_000_000,
                },
            )])
            .with_region_overrides([("US-East".to_owned(), 100)])
            .with_pue_milli(1_000);
        let estimate = model.estimate("gpt-4o-2024-11-20", &usage(5_000, 2_000), Some("us-east"));
        assert_eq!(estimate.energy_uwh, 2_000_000);
        assert_eq!(estimate.carbon_ug, 200_000);
    }

    #[test]
    fn rounds_each_request_to_the_nearest_unit() {
        let model = EnergyModel::builtin().with_pue_milli(1_000);
        // One output token on the small class: 100 micro-Wh exactly; one input token: 25.
        assert_eq!(
            model.estimate("gpt-4o-mini", &usage(0, 1), None).energy_uwh,
            100
        );
        assert_eq!(
            model.estimate("gpt-4o-mini", &usage(1, 0), None).energy_uwh,
            25
        );
        // 25 micro-Wh at 39 g/kWh: 0.975 micro-g, rounds to 1.
        assert_eq!(
            model
                .estimate("gpt-4o-mini", &usage(1, 0), Some("eu-north"))
                .carbon_ug,
            1
        );
    }

    #[test]
    fn sums_exactly_across_requests() {
        let model = EnergyModel::builtin();
        let one = model.estimate("claude-haiku-4-5", &usage(1_234, 567), Some("eu-west"));
        let total = (0..1_000).fold(
            Estimate {
                energy_uwh: 0,
                carbon_ug: 0,
                source: CoefficientSource::Model,
            },
            |sum, _| sum.saturating_add(one),
        );
        assert_eq!(total.energy_uwh, one.energy_uwh * 1_000);
        assert_eq!(total.carbon_ug, one.carbon_ug * 1_000);
    }

    #[test]
    fn embeddings_spend_energy_on_input_only() {
        let model = EnergyModel::builtin().with_pue_milli(1_000);
        let estimate = model.estimate("text-embedding-3-small", &usage(1_000, 0), None);
        assert_eq!(estimate.energy_uwh, 25_000);
    }
}
