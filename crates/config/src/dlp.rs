//! `[dlp]` and `[aliases.NAME.dlp]`: which detectors act on a route's traffic, and how.
//!
//! ```toml
//! [dlp]
//! detectors = { email = "pseudonymise", payment_card = "redact", secret = "block" }
//! answers = true                      # scan answers too (default)
//! [[dlp.custom]]
//! name = "codename"
//! words = ["bluebird", "nightjar"]    # or: pattern = "PRJ-[0-9]{4}"
//! action = "redact"
//! [dlp.roles.compliance]              # keys holding the role: these actions win
//! secret = "log"
//!
//! [aliases.internal.dlp]              # a route: its actions over the global ones
//! detectors = { email = "log" }
//! ```
//!
//! One scanner serves every route (built over every detector any of them names); the routes
//! differ only in their actions.

use std::collections::BTreeMap;

use std::sync::Arc;

use serde::Deserialize;
use sluice_dlp::{Custom, Detector, Scanner};

use crate::FieldProblem;
use crate::file::push;

/// What to do with a detector's findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DlpAction {
    Redact,
    Pseudonymise,
    Block,
    Log,
    /// Not acted on (to turn a detector off on one route or for one role).
    Off,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DlpSection {
    #[serde(default)]
    detectors: BTreeMap<String, DlpAction>,
    answers: Option<bool>,
    #[serde(default)]
    custom: Vec<CustomSection>,
    #[serde(default)]
    roles: BTreeMap<String, BTreeMap<String, DlpAction>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomSection {
    name: String,
    pattern: Option<String>,
    words: Option<Vec<String>>,
    action: DlpAction,
}

/// A route's own `[aliases.NAME.dlp]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteDlpSection {
    #[serde(default)]
    detectors: BTreeMap<String, DlpAction>,
    answers: Option<bool>,
    #[serde(default)]
    roles: BTreeMap<String, BTreeMap<String, DlpAction>>,
}

/// The detectors the one scanner runs (built-in and custom), and that scanner, built once
/// the configuration is read when any detector is named.
#[derive(Debug, Clone, Default)]
pub struct DlpSettings {
    pub detectors: Vec<Detector>,
    pub custom: Vec<Custom>,
    pub scanner: Option<Arc<Scanner>>,
}

impl DlpSettings {
    /// Builds the scanner over every detector `[dlp]` and the routes name; what is wrong with
    /// a custom detector is a problem at `dlp.custom`.
    pub(crate) fn build(&mut self, problems: &mut Vec<FieldProblem>) {
        if self.detectors.is_empty() && self.custom.is_empty() {
            return;
        }
        self.detectors.sort_unstable();
        match Scanner::new(&self.detectors, self.custom.clone()) {
            Ok(scanner) => self.scanner = Some(Arc::new(scanner)),
            Err(e) => push(problems, "dlp.custom".into(), error_chain(&e)),
        }
    }
}

/// A route's DLP: actions by detector name (`off` ones left out), role overrides (in name
/// order; a role's `off` turns the detector off for its keys), and whether answers are
/// scanned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteDlp {
    pub actions: BTreeMap<String, DlpAction>,
    pub roles: Vec<(String, BTreeMap<String, DlpAction>)>,
    pub answers: bool,
}

impl DlpSection {
    /// The scanner's detectors, checked: names are built-in detectors or custom ones, custom
    /// patterns compile.
    pub(crate) fn settings(&self, problems: &mut Vec<FieldProblem>) -> DlpSettings {
        let mut custom = Vec::new();
        for (i, section) in self.custom.iter().enumerate() {
            let field = format!("dlp.custom[{i}]");
            match (&section.pattern, &section.words) {
                (Some(pattern), None) => custom.push(Custom::Pattern {
                    name: section.name.clone(),
                    pattern: pattern.clone(),
                }),
                (None, Some(words)) => custom.push(Custom::Words {
                    name: section.name.clone(),
                    words: words.clone(),
                }),
                _ => push(
                    problems,
                    field,
                    "needs exactly one of `pattern` and `words`".into(),
                ),
            }
        }
        let mut detectors: Vec<Detector> = Vec::new();
        for name in self.detectors.keys() {
            self.run(
                name,
                format!("dlp.detectors.{name}"),
                &mut detectors,
                problems,
            );
        }
        for (role, actions) in &self.roles {
            for name in actions.keys() {
                let field = format!("dlp.roles.{role}.{name}");
                self.run(name, field, &mut detectors, problems);
            }
        }
        DlpSettings {
            detectors,
            custom,
            scanner: None,
        }
    }

    /// Adds the built-in detector `name` names to those the scanner runs; a custom detector's
    /// name is left to the scanner's custom list, any other is a problem at `field`.
    fn run(
        &self,
        name: &str,
        field: String,
        detectors: &mut Vec<Detector>,
        problems: &mut Vec<FieldProblem>,
    ) {
        if self.custom.iter().any(|c| c.name == name) {
            return;
        }
        match name.parse::<Detector>() {
            Ok(detector) if !detectors.contains(&detector) => detectors.push(detector),
            Ok(_) => {}
            Err(_) => push(
                problems,
                field,
                format!(
                    "`{name}` is not a detector (built-in: {}; or a [[dlp.custom]] name)",
                    Detector::ALL.map(Detector::as_str).join(", ")
                ),
            ),
        }
    }

    /// Names a route's section uses that the scanner must run too.
    pub(crate) fn add_route_detectors(
        &self,
        route: &RouteDlpSection,
        alias: &str,
        settings: &mut DlpSettings,
        problems: &mut Vec<FieldProblem>,
    ) {
        let names = route
            .detectors
            .keys()
            .map(|name| (name, format!("aliases.{alias}.dlp.detectors.{name}")))
            .chain(route.roles.iter().flat_map(|(role, actions)| {
                actions
                    .keys()
                    .map(move |name| (name, format!("aliases.{alias}.dlp.roles.{role}.{name}")))
            }));
        for (name, field) in names {
            self.run(name, field, &mut settings.detectors, problems);
        }
    }

    /// The route's actions: the global ones, the custom detectors' own, then the route's.
    /// `None` when nothing acts on the route.
    pub(crate) fn route(&self, route: Option<&RouteDlpSection>) -> Option<RouteDlp> {
        let mut actions = self.detectors.clone();
        for custom in &self.custom {
            actions.insert(custom.name.clone(), custom.action);
        }
        let mut roles = self.roles.clone();
        if let Some(route) = route {
            actions.extend(route.detectors.iter().map(|(k, v)| (k.clone(), *v)));
            for (role, overrides) in &route.roles {
                roles
                    .entry(role.clone())
                    .or_default()
                    .extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
            }
        }
        let answers = route
            .and_then(|r| r.answers)
            .or(self.answers)
            .unwrap_or(true);
        actions.retain(|_, action| *action != DlpAction::Off);
        let role_acts = roles
            .values()
            .any(|overrides| overrides.values().any(|a| *a != DlpAction::Off));
        if actions.is_empty() && !role_acts {
            return None;
        }
        Some(RouteDlp {
            actions,
            roles: roles.into_iter().collect(),
            answers,
        })
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
