//! Tool policy as hard constraints: which tools a key may offer and call, and which tool calls
//! (by tool name, argument text, or a numeric argument over a bound) are destructive and need a
//! capability the key must hold.
//!
//! Everything here is a value judged against values: [`ToolPolicy::rights`] says what one key
//! may do (from its id and roles), [`ToolPolicy::judge`] says what becomes of one tool call.
//! Applying a judgement to a request, an answer or a stream, and recording it, is the
//! pipeline's tool hook (`sluice_pipeline::hooks::tools`); the configuration builds these from
//! `[tool_policy]` (`sluice_config`); `docs/tool-policy.md` is the reference.

use std::collections::BTreeMap;

use serde_json::Value;

/// A tool name pattern: an exact name, or a prefix ending in `*` (`db_*`); `*` alone matches
/// every tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPattern {
    prefix: String,
    wildcard: bool,
}

/// Why a tool name pattern cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("must not be empty")]
    Empty,
    #[error("`*` may only end a pattern (`db_*`), or stand alone for every tool")]
    InnerWildcard,
}

impl ToolPattern {
    pub fn parse(text: &str) -> Result<ToolPattern, PatternError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let (prefix, wildcard) = match text.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (text, false),
        };
        if prefix.contains('*') {
            return Err(PatternError::InnerWildcard);
        }
        Ok(ToolPattern {
            prefix: prefix.to_owned(),
            wildcard,
        })
    }

    pub fn matches(&self, tool: &str) -> bool {
        if self.wildcard {
            tool.starts_with(&self.prefix)
        } else {
            tool == self.prefix
        }
    }
}

impl std::fmt::Display for ToolPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.prefix)?;
        if self.wildcard {
            f.write_str("*")?;
        }
        Ok(())
    }
}

/// A regular expression matched against a call's argument text (its JSON, as the model wrote
/// it), case-insensitively.
#[derive(Debug, Clone)]
pub struct ArgumentPattern(regex::Regex);

/// Patterns are bounded so that one rule cannot make every answer slow to check.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

impl ArgumentPattern {
    pub fn new(pattern: &str) -> Result<ArgumentPattern, regex::Error> {
        regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(PATTERN_SIZE_LIMIT)
            .build()
            .map(ArgumentPattern)
    }

    pub fn is_match(&self, arguments: &str) -> bool {
        self.0.is_match(arguments)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// A numeric argument over a bound: `field` names it (`amount`, or a JSON pointer such as
/// `/payment/amount`), `max` is the most allowed. A number given as a JSON string (`"1500.00"`)
/// counts as that number.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgumentBound {
    /// A JSON pointer (`amount` is read as `/amount`).
    pointer: String,
    /// Argument values are JSON numbers, compared as JSON reads them: a float.
    max: f64,
}

impl ArgumentBound {
    pub fn new(field: &str, max: f64) -> ArgumentBound {
        let pointer = if field.starts_with('/') {
            field.to_owned()
        } else {
            format!("/{field}")
        };
        ArgumentBound { pointer, max }
    }

    pub fn field(&self) -> &str {
        &self.pointer
    }

    pub fn max(&self) -> f64 {
        self.max
    }

    /// Whether `arguments` are over the bound. Arguments that are not JSON, or whose field is
    /// not a number, are treated as over it: the gateway cannot tell, so the rule applies
    /// (fail closed). Arguments without the field are not over it.
    fn exceeded(&self, arguments: &str) -> bool {
        let Ok(value) = serde_json::from_str::<Value>(arguments) else {
            return true;
        };
        match value.pointer(&self.pointer) {
            None | Some(Value::Null) => false,
            Some(Value::Number(n)) => n.as_f64().is_none_or(|n| n > self.max),
            Some(Value::String(s)) => s.trim().parse::<f64>().map_or(true, |n| n > self.max),
            Some(_) => true,
        }
    }
}

/// What a matching rule does to a call from a key without its capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleAction {
    /// The call is replaced by an explanation; the client never sees it as a call.
    Block,
    /// The call goes through; the match is recorded.
    Log,
}

/// A destructive-call rule: a call to one of `tools` whose arguments match `arguments` (when
/// set) and are over `bound` (when set).
#[derive(Debug, Clone)]
pub struct ToolRule {
    /// The rule's id, in explanations and the record.
    pub name: String,
    pub tools: Vec<ToolPattern>,
    pub arguments: Option<ArgumentPattern>,
    pub bound: Option<ArgumentBound>,
    pub action: RuleAction,
    /// A key holding one of these roles (or capabilities) may make the call.
    pub unless_role: Vec<String>,
}

impl ToolRule {
    /// Whether a call to `tool` with `arguments` is one this rule is about.
    pub fn matches(&self, tool: &str, arguments: &str) -> bool {
        self.tools.iter().any(|p| p.matches(tool))
            && self
                .arguments
                .as_ref()
                .is_none_or(|a| a.is_match(arguments))
            && self.bound.as_ref().is_none_or(|b| b.exceeded(arguments))
    }
}

/// What configuration says of one key, by its id: the tools it may use (replacing what its
/// roles allow) and capabilities it holds besides its roles.
#[derive(Debug, Clone, Default)]
pub struct KeyTools {
    pub tools: Option<Vec<ToolPattern>>,
    pub capabilities: Vec<String>,
}

/// A route's tool policy (`[tool_policy]`, or its `[aliases.NAME.tool_policy]`).
#[derive(Debug, Clone, Default)]
pub struct ToolPolicy {
    /// Tools a key with none of the listed roles may use; `None`: every tool.
    pub default_tools: Option<Vec<ToolPattern>>,
    /// Role -> the tools a key holding it may use.
    pub roles: BTreeMap<String, Vec<ToolPattern>>,
    /// Key id -> what it may use and hold besides its roles.
    pub keys: BTreeMap<String, KeyTools>,
    /// Checked in order against every call in an answer.
    pub rules: Vec<ToolRule>,
}

/// Which tools a key may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed<'a> {
    Every,
    Only(Vec<&'a ToolPattern>),
}

impl Allowed<'_> {
    pub fn allows(&self, tool: &str) -> bool {
        match self {
            Allowed::Every => true,
            Allowed::Only(patterns) => patterns.iter().any(|p| p.matches(tool)),
        }
    }
}

/// What one key may do under a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rights<'a> {
    pub allowed: Allowed<'a>,
    /// The key's roles and configured capabilities.
    pub capabilities: Vec<String>,
}

/// What becomes of one tool call.
#[derive(Debug, Clone)]
pub enum Judgement<'a> {
    /// It goes through; `logged` are the rules that matched and only record it (a `log` rule, or
    /// a `block` rule whose capability the key holds).
    Pass { logged: Vec<&'a str> },
    /// The key may not use the tool at all.
    NotAllowed,
    /// A `block` rule matched and the key lacks its capability.
    Blocked { rule: &'a ToolRule },
}

impl ToolPolicy {
    /// What a key with this id and these roles may do.
    pub fn rights<'a>(&'a self, key_id: &str, roles: &[String]) -> Rights<'a> {
        let key = self.keys.get(key_id);
        let allowed = match key.and_then(|k| k.tools.as_ref()) {
            Some(tools) => Allowed::Only(tools.iter().collect()),
            None => {
                let by_role: Vec<&Vec<ToolPattern>> =
                    roles.iter().filter_map(|r| self.roles.get(r)).collect();
                if by_role.is_empty() {
                    match &self.default_tools {
                        Some(tools) => Allowed::Only(tools.iter().collect()),
                        None => Allowed::Every,
                    }
                } else {
                    Allowed::Only(by_role.into_iter().flatten().collect())
                }
            }
        };
        let mut capabilities = roles.to_vec();
        if let Some(key) = key {
            capabilities.extend(key.capabilities.iter().cloned());
        }
        Rights {
            allowed,
            capabilities,
        }
    }

    /// Judges a call to `tool` with `arguments` (its JSON text) by a key with `rights`: first
    /// whether the key may use the tool, then every rule in order; the first `block` rule
    /// whose capability the key lacks decides.
    pub fn judge<'a>(&'a self, rights: &Rights<'_>, tool: &str, arguments: &str) -> Judgement<'a> {
        if !rights.allowed.allows(tool) {
            return Judgement::NotAllowed;
        }
        let mut logged = Vec::new();
        for rule in self.rules.iter().filter(|r| r.matches(tool, arguments)) {
            let capable = rule
                .unless_role
                .iter()
                .any(|role| rights.capabilities.contains(role));
            match rule.action {
                RuleAction::Block if !capable => return Judgement::Blocked { rule },
                RuleAction::Block | RuleAction::Log => logged.push(rule.name.as_str()),
            }
        }
        Judgement::Pass { logged }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<ToolPattern> {
        list.iter()
            .map(|p| ToolPattern::parse(p).unwrap())
            .collect()
    }

    fn policy() -> ToolPolicy {
        ToolPolicy {
            default_tools: Some(patterns(&["search", "db_*"])),
            roles: BTreeMap::from([("operator".to_owned(), patterns(&["*"]))]),
            keys: BTreeMap::from([(
                "key_ci".to_owned(),
                KeyTools {
                    tools: Some(patterns(&["deploy"])),
                    capabilities: vec!["deployer".into()],
                },
            )]),
            rules: vec![
                ToolRule {
                    name: "no-drop".into(),
                    tools: patterns(&["*"]),
                    arguments: Some(ArgumentPattern::new(r"\bdrop\s+(table|database)\b").unwrap()),
                    bound: None,
                    action: RuleAction::Block,
                    unless_role: vec!["operator".into()],
                },
                ToolRule {
                    name: "drop-database".into(),
                    tools: patterns(&["drop_database"]),
                    arguments: None,
                    bound: None,
                    action: RuleAction::Block,
                    unless_role: vec!["operator".into()],
                },
                ToolRule {
                    name: "big-payment".into(),
                    tools: patterns(&["pay"]),
                    arguments: None,
                    bound: Some(ArgumentBound::new("/payment/amount", 1000.0)),
                    action: RuleAction::Block,
                    unless_role: vec!["finance".into()],
                },
                ToolRule {
                    name: "deploys".into(),
                    tools: patterns(&["deploy"]),
                    arguments: None,
                    bound: None,
                    action: RuleAction::Log,
                    unless_role: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        assert!(ToolPattern::parse("db_*").unwrap().matches("db_query"));
        assert!(!ToolPattern::parse("db_*").unwrap().matches("dbquery"));
        assert!(ToolPattern::parse("*").unwrap().matches("anything"));
        assert!(!ToolPattern::parse("search").unwrap().matches("search2"));
        assert_eq!(ToolPattern::parse(" "), Err(PatternError::Empty));
        assert_eq!(ToolPattern::parse("a*b"), Err(PatternError::InnerWildcard));
        assert_eq!(ToolPattern::parse("db_*").unwrap().to_string(), "db_*");
    }

    #[test]
    fn a_key_uses_its_own_list_else_its_roles_else_the_default() {
        let policy = policy();
        let user = policy.rights("key_u", &["user".into()]);
        assert!(user.allowed.allows("db_query") && user.allowed.allows("search"));
        assert!(!user.allowed.allows("drop_database"));
        let operator = policy.rights("key_o", &["operator".into()]);
        assert!(operator.allowed.allows("drop_database"));
        let ci = policy.rights("key_ci", &["operator".into()]);
        assert!(ci.allowed.allows("deploy") && !ci.allowed.allows("search"));
        assert_eq!(ci.capabilities, vec!["operator", "deployer"]);
        let open = ToolPolicy::default();
        assert_eq!(open.rights("k", &[]).allowed, Allowed::Every);
    }

    #[test]
    fn destructive_calls_are_blocked_unless_the_key_holds_the_capability() {
        let mut policy = policy();
        policy.default_tools = None;
        let user = policy.rights("key_u", &[]);
        let operator = policy.rights("key_o", &["operator".into()]);
        let drop = r#"{"sql": "DROP   Table users"}"#;
        match policy.judge(&user, "db_query", drop) {
            Judgement::Blocked { rule } => assert_eq!(rule.name, "no-drop"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            policy.judge(&operator, "db_query", drop),
            Judgement::Pass { logged } if logged == ["no-drop"]
        ));
        assert!(matches!(
            policy.judge(&user, "db_query", r#"{"sql": "select 1"}"#),
            Judgement::Pass { logged } if logged.is_empty()
        ));
        match policy.judge(&user, "drop_database", "{}") {
            Judgement::Blocked { rule } => assert_eq!(rule.name, "drop-database"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            policy.judge(&user, "deploy", "{}"),
            Judgement::Pass { logged } if logged == ["deploys"]
        ));
    }

    #[test]
    fn a_numeric_bound_blocks_amounts_over_it_and_arguments_it_cannot_read() {
        let mut policy = policy();
        policy.default_tools = None;
        let user = policy.rights("key_u", &[]);
        let blocked =
            |args: &str| matches!(policy.judge(&user, "pay", args), Judgement::Blocked { .. });
        assert!(blocked(r#"{"payment": {"amount": 1000.5}}"#));
        assert!(blocked(r#"{"payment": {"amount": "2500"}}"#));
        assert!(blocked(r#"{"payment": {"amount": "lots"}}"#));
        assert!(blocked(r#"{"payment": "#));
        assert!(!blocked(r#"{"payment": {"amount": 1000}}"#));
        assert!(!blocked(r#"{"payment": {}}"#));
        let finance = policy.rights("key_f", &["finance".into()]);
        assert!(matches!(
            policy.judge(&finance, "pay", r#"{"payment": {"amount": 5000}}"#),
            Judgement::Pass { .. }
        ));
    }

    #[test]
    fn tools_outside_the_keys_list_are_not_allowed() {
        let policy = policy();
        let user = policy.rights("key_u", &[]);
        assert!(matches!(
            policy.judge(&user, "shell", "{}"),
            Judgement::NotAllowed
        ));
    }
}
