//! Sluice policy: what a request may cost and whether it may run, decided from values passed in
//! and returned as values.
//!
//! - [`pricing`]: the dated list-price table, overridable, and exact integer cost arithmetic.
//! - [`energy`]: estimated energy (micro-Wh) and carbon (micro-gCO2e) per request.
//! - [`budget`]: scopes (organisation → team → project → key → end user), limits in USD, tokens
//!   or requests per calendar or rolling period, window math and allocation validation.
//! - [`counters`]: atomic all-or-nothing reservations against every level at once, settled to
//!   actual usage, in process ([`counters::MemoryCounters`]) or in Redis for several replicas.
//! - [`calendar`]: instants as Unix milliseconds and the injected [`calendar::Clock`].
//! - [`tools`]: which tools a key may offer and call, and which calls need a capability.
//! - [`stops`]: what the stop-sequence guard does with user content that holds a stop sequence.
//!
//! Time is always an argument; nothing here reads the clock on its own. This crate does not
//! decide which limits apply to a caller, when to fail open, or how a refusal is rendered: the
//! pipeline calls it (admit: plan charges and reserve; settle: settle the hold), the server
//! renders [`counters::Refusal`] as a 429. Methods and sources for every figure are in
//! `docs/cost-energy-carbon.md`.

pub mod budget;
pub mod calendar;
pub mod counters;
pub mod energy;
pub mod error;
mod model_id;
pub mod pricing;
pub mod stops;
pub mod tools;

pub use budget::{Consumption, Level, Limit, Metric, ParseProblem, Period, Scope, plain_usd};
pub use calendar::{Clock, SystemClock, UnixMs};
pub use counters::{Counters, Hold, HoldGuard, MemoryCounters, OnCounterError, Quota, Refusal};
pub use energy::{EnergyModel, Estimate};
pub use error::PolicyError;
pub use pricing::{ModelPrice, PRICES_AS_OF, PriceTable, Tier};
