//! The egress-policy sections of the file: `[tool_policy]` (tools a key or role may use, and
//! destructive-call rules) and `[stop_sequences]` (the stop-sequence guard), each overridable
//! per alias (`[aliases.NAME.tool_policy]`, `[aliases.NAME.stop_sequences]`; an alias's section
//! replaces the global one whole). Validated into [`sluice_policy::tools::ToolPolicy`] and
//! [`sluice_policy::stops::OnCollision`]; `docs/tool-policy.md` and `docs/stop-sequences.md`
//! are the reference.

use std::collections::BTreeMap;

use serde::Deserialize;
use sluice_policy::stops::OnCollision;
use sluice_policy::tools::{
    ArgumentBound, ArgumentPattern, KeyTools, RuleAction, ToolPattern, ToolPolicy, ToolRule,
};

use crate::FieldProblem;
use crate::file::{check, push};

/// `[tool_policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolPolicySection {
    /// Tools a key holding none of the roles below may use; absent: every tool.
    default_tools: Option<Vec<String>>,
    #[serde(default)]
    roles: BTreeMap<String, RoleToolsSection>,
    /// By key id (`key_...`, as `sluice keys create` prints it).
    #[serde(default)]
    keys: BTreeMap<String, KeyToolsSection>,
    #[serde(default)]
    rules: Vec<ToolRuleSection>,
}

/// `[tool_policy.roles.ROLE]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleToolsSection {
    tools: Vec<String>,
}

/// `[tool_policy.keys.KEY_ID]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyToolsSection {
    /// Replaces what the key's roles allow.
    tools: Option<Vec<String>>,
    /// Held besides the key's roles, for rules' `unless_role`.
    #[serde(default)]
    capabilities: Vec<String>,
}

/// `[[tool_policy.rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolRuleSection {
    name: String,
    tools: Vec<String>,
    /// A regular expression, matched case-insensitively against the call's JSON arguments.
    arguments: Option<String>,
    /// With `max`: a numeric argument (`amount` or a JSON pointer like `/payment/amount`).
    field: Option<String>,
    max: Option<f64>,
    #[serde(default)]
    action: ActionSection,
    #[serde(default)]
    unless_role: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActionSection {
    #[default]
    Block,
    Log,
}

/// `[stop_sequences]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StopSequencesSection {
    #[serde(default)]
    on_collision: CollisionSection,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CollisionSection {
    #[default]
    Warn,
    Escape,
    Refuse,
}

impl StopSequencesSection {
    pub(crate) fn on_collision(&self) -> OnCollision {
        match self.on_collision {
            CollisionSection::Warn => OnCollision::Warn,
            CollisionSection::Escape => OnCollision::Escape,
            CollisionSection::Refuse => OnCollision::Refuse,
        }
    }
}

/// Patterns of a tool list at `field`, each problem reported at its index.
fn patterns(list: &[String], field: &str, problems: &mut Vec<FieldProblem>) -> Vec<ToolPattern> {
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| match ToolPattern::parse(text) {
            Ok(pattern) => Some(pattern),
            Err(why) => {
                push(problems, format!("{field}[{i}]"), why.to_string());
                None
            }
        })
        .collect()
}

fn names(list: &[String], field: &str, problems: &mut Vec<FieldProblem>) {
    for (i, name) in list.iter().enumerate() {
        check(
            problems,
            !name.trim().is_empty(),
            format!("{field}[{i}]"),
            "must not be empty",
        );
    }
}

impl ToolPolicySection {
    /// The policy this section describes; `path` is where it sits (`tool_policy`,
    /// `aliases.NAME.tool_policy`).
    pub(crate) fn policy(&self, path: &str, problems: &mut Vec<FieldProblem>) -> ToolPolicy {
        let default_tools = self
            .default_tools
            .as_ref()
            .map(|list| patterns(list, &format!("{path}.default_tools"), problems));
        let roles = self
            .roles
            .iter()
            .map(|(role, section)| {
                check(
                    problems,
                    !role.trim().is_empty(),
                    format!("{path}.roles"),
                    "a role name must not be empty",
                );
                let tools = patterns(
                    &section.tools,
                    &format!("{path}.roles.{role}.tools"),
                    problems,
                );
                (role.clone(), tools)
            })
            .collect();
        let keys = self
            .keys
            .iter()
            .map(|(id, section)| {
                let field = format!("{path}.keys.{id}");
                check(
                    problems,
                    id.starts_with("key_"),
                    field.clone(),
                    "must be a key id (`key_...`, as `sluice keys create` and `sluice keys list` print it)",
                );
                let tools = section
                    .tools
                    .as_ref()
                    .map(|list| patterns(list, &format!("{field}.tools"), problems));
                names(
                    &section.capabilities,
                    &format!("{field}.capabilities"),
                    problems,
                );
                let tools = KeyTools {
                    tools,
                    capabilities: section.capabilities.clone(),
                };
                (id.clone(), tools)
            })
            .collect();
        let mut rules: Vec<ToolRule> = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let field = format!("{path}.rules[{i}]");
            if rule.name.trim().is_empty() {
                push(
                    problems,
                    format!("{field}.name"),
                    "must not be empty".into(),
                );
            } else if !rule
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                // The name goes into the `x-sluice-policy` header and metric labels.
                push(
                    problems,
                    format!("{field}.name"),
                    "may hold only letters, digits, `-`, `_` and `.`".into(),
                );
            } else if self.rules[..i].iter().any(|r| r.name == rule.name) {
                push(
                    problems,
                    format!("{field}.name"),
                    format!("`{}` names another rule too", rule.name),
                );
            }
            check(
                problems,
                !rule.tools.is_empty(),
                format!("{field}.tools"),
                "must name at least one tool (`*` for every tool)",
            );
            let tools = patterns(&rule.tools, &format!("{field}.tools"), problems);
            let arguments =
                rule.arguments
                    .as_deref()
                    .and_then(|pattern| match ArgumentPattern::new(pattern) {
                        Ok(pattern) => Some(pattern),
                        Err(e) => {
                            push(
                                problems,
                                format!("{field}.arguments"),
                                format!("not a valid regular expression: {e}"),
                            );
                            None
                        }
                    });
            let bound = match (&rule.field, rule.max) {
                (Some(name), Some(max)) => {
                    check(
                        problems,
                        !name.trim().is_empty(),
                        format!("{field}.field"),
                        "must not be empty",
                    );
                    check(
                        problems,
                        max.is_finite(),
                        format!("{field}.max"),
                        "must be a finite number",
                    );
                    Some(ArgumentBound::new(name, max))
                }
                (Some(_), None) => {
                    push(
                        problems,
                        format!("{field}.max"),
                        "required with `field`".into(),
                    );
                    None
                }
                (None, Some(_)) => {
                    push(
                        problems,
                        format!("{field}.field"),
                        "required with `max`".into(),
                    );
                    None
                }
                (None, None) => None,
            };
            names(&rule.unless_role, &format!("{field}.unless_role"), problems);
            rules.push(ToolRule {
                name: rule.name.clone(),
                tools,
                arguments,
                bound,
                action: match rule.action {
                    ActionSection::Block => RuleAction::Block,
                    ActionSection::Log => RuleAction::Log,
                },
                unless_role: rule.unless_role.clone(),
            });
        }
        ToolPolicy {
            default_tools,
            roles,
            keys,
            rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sluice_policy::stops::OnCollision;
    use sluice_policy::tools::Judgement;

    use crate::{ConfigError, Settings};

    const BASE: &str = r#"
        [providers.openai]
        type = "openai"
        api_key_env = "OPENAI_API_KEY"

        [providers.claude]
        type = "anthropic"
        api_key_env = "OPENAI_API_KEY"

        [deployments.gpt]
        provider = "openai"
        model = "gpt-4o"

        [deployments.sonnet]
        provider = "claude"
        model = "claude-sonnet-4-5"

        [deployments.wide]
        provider = "openai"
        model = "gpt-4o"
        max_stop_sequences = 16
    "#;

    fn load(extra: &str) -> Result<Settings, ConfigError> {
        Settings::from_toml(
            &format!("{BASE}\n{extra}"),
            Path::new("/etc/sluice/sluice.toml"),
            |name| (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned()),
        )
    }

    fn problems(extra: &str) -> Vec<String> {
        match load(extra) {
            Err(ConfigError::Invalid(problems)) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn the_global_tool_policy_applies_to_every_alias_unless_one_replaces_it() {
        let settings = load(
            r#"
            [tool_policy]
            default_tools = ["search", "db_*"]

            [tool_policy.roles.operator]
            tools = ["*"]

            [tool_policy.keys.key_0123abcd]
            tools = ["deploy"]
            capabilities = ["deployer"]

            [[tool_policy.rules]]
            name = "no-drop"
            tools = ["*"]
            arguments = '\bdrop\s+(table|database)\b'
            unless_role = ["operator"]

            [[tool_policy.rules]]
            name = "big-payment"
            tools = ["pay"]
            field = "/payment/amount"
            max = 1000
            action = "log"

            [aliases.fast]
            deployments = ["gpt"]

            [aliases.open]
            deployments = ["gpt"]
            [aliases.open.tool_policy]
            "#,
        )
        .unwrap();
        let fast = settings.aliases["fast"].tool_policy.as_ref().unwrap();
        assert_eq!(fast.rules.len(), 2);
        let user = fast.rights("key_x", &[]);
        assert!(matches!(
            fast.judge(&user, "db_query", r#"{"sql": "Drop Table t"}"#),
            Judgement::Blocked { rule } if rule.name == "no-drop"
        ));
        assert!(matches!(
            fast.judge(&user, "shell", "{}"),
            Judgement::NotAllowed
        ));
        let ci = fast.rights("key_0123abcd", &[]);
        assert!(ci.allowed.allows("deploy") && !ci.allowed.allows("search"));
        let open = settings.aliases["open"].tool_policy.as_ref().unwrap();
        assert!(open.rules.is_empty() && open.default_tools.is_none());
    }

    #[test]
    fn without_a_tool_policy_there_is_none_and_collisions_are_warned_about() {
        let settings = load(
            r#"
            [aliases.fast]
            deployments = ["gpt"]

            [aliases.strict]
            deployments = ["gpt"]
            stop_sequences = { on_collision = "refuse" }
            "#,
        )
        .unwrap();
        assert!(settings.aliases["fast"].tool_policy.is_none());
        assert_eq!(settings.aliases["fast"].stop_sequences, OnCollision::Warn);
        assert_eq!(
            settings.aliases["strict"].stop_sequences,
            OnCollision::Refuse
        );
        let global = load(
            "[stop_sequences]\non_collision = \"escape\"\n[aliases.fast]\ndeployments = [\"gpt\"]\n",
        )
        .unwrap();
        assert_eq!(global.aliases["fast"].stop_sequences, OnCollision::Escape);
    }

    #[test]
    fn deployments_declare_how_many_stop_sequences_they_accept() {
        let settings = load("").unwrap();
        assert_eq!(
            settings.deployment("gpt").unwrap().max_stop_sequences,
            Some(4)
        );
        assert_eq!(
            settings.deployment("sonnet").unwrap().max_stop_sequences,
            None
        );
        assert_eq!(
            settings.deployment("wide").unwrap().max_stop_sequences,
            Some(16)
        );
    }

    #[test]
    fn names_the_field_of_every_tool_policy_problem() {
        let found = problems(
            r#"
            [tool_policy]
            default_tools = ["ok", "a*b"]

            [tool_policy.roles.ops]
            tools = [""]

            [tool_policy.keys.alice]
            tools = ["x"]

            [[tool_policy.rules]]
            name = "bad rule"
            tools = []
            arguments = "(unclosed"
            field = "amount"

            [[tool_policy.rules]]
            name = "dup"
            tools = ["x"]
            max = 3

            [[tool_policy.rules]]
            name = "dup"
            tools = ["x"]
            unless_role = [" "]

            [aliases.fast]
            deployments = ["gpt"]
            [aliases.fast.tool_policy]
            rules = [{ name = "r", tools = ["*x"] }]
            "#,
        );
        let fields: Vec<&str> = found
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            [
                "tool_policy.default_tools[1]",
                "tool_policy.roles.ops.tools[0]",
                "tool_policy.keys.alice",
                "tool_policy.rules[0].name",
                "tool_policy.rules[0].tools",
                "tool_policy.rules[0].arguments",
                "tool_policy.rules[0].max",
                "tool_policy.rules[1].field",
                "tool_policy.rules[2].name",
                "tool_policy.rules[2].unless_role[0]",
                "aliases.fast.tool_policy.rules[0].tools[0]",
            ],
            "{found:#?}"
        );
        assert!(
            found[5].contains("not a valid regular expression"),
            "{}",
            found[5]
        );
    }

    #[test]
    fn an_unknown_action_or_collision_policy_is_a_parse_error() {
        for text in [
            "[[tool_policy.rules]]\nname = \"r\"\ntools = [\"x\"]\naction = \"hold\"\n",
            "[stop_sequences]\non_collision = \"ignore\"\n",
        ] {
            assert!(
                matches!(load(text), Err(ConfigError::Parse { .. })),
                "{text}"
            );
        }
    }
}
