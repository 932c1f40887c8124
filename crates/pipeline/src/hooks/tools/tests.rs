use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;
use sluice_policy::tools::{ArgumentPattern, RuleAction, ToolPattern, ToolPolicy, ToolRule};
use sluice_types::record::{Audit, PolicyAction, PolicyPlace};
use sluice_types::{
    ChatRequest, ChatResponse, Choice, Classify, FinishReason, Part, StreamEvent, ToolCall,
};

use super::*;

use crate::test_support::caller;

fn guard() -> ToolGuard {
    let pattern = |p: &str| ToolPattern::parse(p).unwrap();
    ToolGuard {
        policy: Arc::new(ToolPolicy {
            default_tools: Some(vec![pattern("db_*"), pattern("drop_database")]),
            roles: BTreeMap::from([("operator".to_owned(), vec![pattern("*")])]),
            keys: BTreeMap::new(),
            rules: vec![
                ToolRule {
                    name: "no-drop".into(),
                    tools: vec![pattern("drop_database")],
                    arguments: None,
                    bound: None,
                    action: RuleAction::Block,
                    unless_role: vec!["operator".into()],
                },
                ToolRule {
                    name: "no-drop-sql".into(),
                    tools: vec![pattern("db_*")],
                    arguments: Some(ArgumentPattern::new(r"\bdrop\s+table\b").unwrap()),
                    bound: None,
                    action: RuleAction::Block,
                    unless_role: vec!["operator".into(), "dba".into()],
                },
            ],
        }),
    }
}

fn request(tools: &[&str]) -> ChatRequest {
    let tools: Vec<_> = tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t, "parameters": {"type": "object"}}}))
        .collect();
    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": tools});
    sluice_wire::openai::decode_chat_request(body.to_string().as_bytes()).unwrap()
}

fn start(roles: &[&str], tools: &[&str], audit: &mut Audit) -> Result<Verdict, HookError> {
    let caller = caller(roles);
    let context = HookContext {
        caller: &caller,
        alias: "m",
    };
    guard().on_request(context, &mut request(tools), audit)
}

fn watcher(roles: &[&str], audit: &mut Audit) -> Box<dyn AnswerHook> {
    match start(roles, &["drop_database", "db_query"], audit).unwrap() {
        Verdict::Watch(w) => w,
        other => panic!("{other:?}"),
    }
}

fn call(id: &str, name: &str, arguments: &str) -> Part {
    Part::ToolCall(ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    })
}

fn answer(parts: Vec<Part>) -> ChatResponse {
    ChatResponse {
        id: "r".into(),
        model: "m".into(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            parts,
            refusal: None,
            finish_reason: Some(FinishReason::ToolUse),
            logprobs: None,
        }],
        usage: None,
        system_fingerprint: None,
    }
}

fn decisions(audit: &Audit) -> Vec<String> {
    audit
        .decisions()
        .iter()
        .map(|d| {
            format!(
                "{}:{}:{}:{}={}",
                d.policy,
                d.rule,
                d.action.as_str(),
                d.place.as_str(),
                d.count
            )
        })
        .collect()
}

#[test]
fn offering_a_tool_the_key_may_not_use_is_refused() {
    let mut audit = Audit::default();
    let error = start(&[], &["db_query", "shell", "deploy"], &mut audit).unwrap_err();
    assert_eq!(
        error,
        HookError::ToolNotAllowed {
            tools: vec!["shell".into(), "deploy".into()]
        }
    );
    assert_eq!(
        error.to_string(),
        "this key may not use the tools `shell`, `deploy` (tool_policy)"
    );
    assert_eq!(
        decisions(&audit),
        ["tool_policy:allowed_tools:block:tools=2"]
    );
    // The operator role allows every tool.
    assert!(matches!(
        start(&["operator"], &["shell"], &mut Audit::default()),
        Ok(Verdict::Watch(_))
    ));
    // No tools offered: nothing to watch.
    assert!(matches!(
        start(&[], &[], &mut Audit::default()),
        Ok(Verdict::Continue)
    ));
}

#[test]
fn a_blocked_call_in_an_answer_is_replaced_by_an_explanation() {
    let mut audit = Audit::default();
    let mut hook = watcher(&["user"], &mut audit);
    let mut response = answer(vec![
        Part::text("Dropping it now."),
        call("c1", "drop_database", r#"{"name":"prod"}"#),
    ]);
    hook.on_response(&mut response, &mut audit).unwrap();
    let choice = &response.choices[0];
    assert_eq!(
        choice.parts,
        vec![
            Part::text("Dropping it now."),
            Part::text(
                "\n\n[sluice] the call to `drop_database` was blocked by tool policy rule `no-drop`: it needs the `operator` role."
            ),
        ]
    );
    // No call remains: the agent loop sees an ordinary end of turn.
    assert_eq!(choice.finish_reason, Some(FinishReason::EndTurn));
    assert_eq!(decisions(&audit), ["tool_policy:no-drop:block:tool_call=1"]);
}

#[test]
fn an_operator_call_passes_unchanged_and_is_recorded() {
    let mut audit = Audit::default();
    let mut hook = watcher(&["operator"], &mut audit);
    let parts = vec![call("c1", "drop_database", r#"{"name":"prod"}"#)];
    let mut response = answer(parts.clone());
    hook.on_response(&mut response, &mut audit).unwrap();
    assert_eq!(response.choices[0].parts, parts);
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::ToolUse)
    );
    assert_eq!(decisions(&audit), ["tool_policy:no-drop:log:tool_call=1"]);
}

#[test]
fn one_blocked_call_of_two_leaves_the_other_and_the_tool_use_finish() {
    let mut audit = Audit::default();
    let mut hook = watcher(&[], &mut audit);
    let mut response = answer(vec![
        call("c1", "db_query", r#"{"sql":"DROP TABLE users"}"#),
        call("c2", "db_query", r#"{"sql":"select 1"}"#),
    ]);
    hook.on_response(&mut response, &mut audit).unwrap();
    let parts = &response.choices[0].parts;
    assert!(
        matches!(&parts[0], Part::Text { text, .. } if text.contains("rule `no-drop-sql`: it needs one of the roles `operator`, `dba`")),
        "{parts:?}"
    );
    assert_eq!(parts[1], call("c2", "db_query", r#"{"sql":"select 1"}"#));
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::ToolUse)
    );
}

fn start_call(index: u32, id: &str, name: &str) -> StreamEvent {
    StreamEvent::ToolCallStart {
        choice: 0,
        index,
        id: id.into(),
        name: name.into(),
    }
}

fn args(index: u32, arguments: &str) -> StreamEvent {
    StreamEvent::ToolCallDelta {
        choice: 0,
        index,
        arguments: arguments.into(),
    }
}

fn feed(
    hook: &mut dyn AnswerHook,
    events: Vec<StreamEvent>,
    audit: &mut Audit,
) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for event in events {
        hook.on_event(event, &mut out, audit).unwrap();
    }
    out
}

#[test]
fn a_stream_holds_each_call_until_its_arguments_are_complete() {
    let mut audit = Audit::default();
    let mut hook = watcher(&[], &mut audit);
    let text = StreamEvent::TextDelta {
        choice: 0,
        text: "ok".into(),
    };
    // Text is not held.
    assert_eq!(
        feed(hook.as_mut(), vec![text.clone()], &mut audit),
        vec![text]
    );
    // The first call is held while its arguments arrive.
    let held = feed(
        hook.as_mut(),
        vec![
            start_call(0, "c1", "drop_database"),
            args(0, r#"{"name""#),
            args(0, r#":"prod"}"#),
        ],
        &mut audit,
    );
    assert_eq!(held, vec![]);
    // The next call settles the first (blocked), and is held in turn.
    let out = feed(
        hook.as_mut(),
        vec![
            start_call(1, "c2", "db_query"),
            args(1, r#"{"sql":"select 1"}"#),
        ],
        &mut audit,
    );
    assert_eq!(
        out,
        vec![StreamEvent::TextDelta {
            choice: 0,
            text: "\n\n[sluice] the call to `drop_database` was blocked by tool policy rule `no-drop`: it needs the `operator` role.".into()
        }]
    );
    // The choice's end settles the second (passed, renumbered from 0), and keeps tool_use.
    let out = feed(
        hook.as_mut(),
        vec![StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::ToolUse,
        }],
        &mut audit,
    );
    assert_eq!(
        out,
        vec![
            start_call(0, "c2", "db_query"),
            args(0, r#"{"sql":"select 1"}"#),
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ToolUse
            }
        ]
    );
    assert_eq!(decisions(&audit), ["tool_policy:no-drop:block:tool_call=1"]);
}

#[test]
fn a_stream_whose_only_call_is_blocked_ends_its_turn() {
    let mut audit = Audit::default();
    let mut hook = watcher(&[], &mut audit);
    let out = feed(
        hook.as_mut(),
        vec![
            start_call(0, "c1", "drop_database"),
            args(0, "{}"),
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ToolUse,
            },
        ],
        &mut audit,
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(&out[0], StreamEvent::TextDelta { text, .. } if text.starts_with("[sluice]")));
    assert_eq!(
        out[1],
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::EndTurn
        }
    );
}

#[test]
fn a_call_still_held_when_the_stream_ends_is_judged_then() {
    let mut audit = Audit::default();
    let mut hook = watcher(&["operator"], &mut audit);
    let out = feed(
        hook.as_mut(),
        vec![start_call(0, "c1", "drop_database"), args(0, "{}")],
        &mut audit,
    );
    assert_eq!(out, vec![]);
    let mut out = Vec::new();
    hook.finish(&mut out, &mut audit).unwrap();
    assert_eq!(
        out,
        vec![start_call(0, "c1", "drop_database"), args(0, "{}")]
    );
}

#[test]
fn arguments_for_a_call_already_judged_end_the_stream() {
    let mut audit = Audit::default();
    let mut hook = watcher(&[], &mut audit);
    feed(
        hook.as_mut(),
        vec![
            start_call(0, "c1", "db_query"),
            args(0, "{}"),
            start_call(1, "c2", "db_query"),
        ],
        &mut audit,
    );
    let error = hook
        .on_event(args(0, r#"DROP TABLE x"#), &mut Vec::new(), &mut audit)
        .unwrap_err();
    assert_eq!(error.kind(), sluice_types::ErrorKind::PolicyBlocked);
}

#[test]
fn calls_in_the_history_are_recorded_not_refused() {
    let body = json!({"model": "m", "tools": [{"type": "function", "function": {"name": "db_query", "parameters": {"type": "object"}}}], "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "drop_database", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]});
    let mut request =
        sluice_wire::openai::decode_chat_request(body.to_string().as_bytes()).unwrap();
    let caller = caller(&[]);
    let context = HookContext {
        caller: &caller,
        alias: "m",
    };
    let mut audit = Audit::default();
    assert!(matches!(
        guard().on_request(context, &mut request, &mut audit),
        Ok(Verdict::Watch(_))
    ));
    assert_eq!(
        decisions(&audit),
        ["tool_policy:history.no-drop:log:tool_call=1"]
    );
    assert_eq!(audit.decisions()[0].action, PolicyAction::Log);
    assert_eq!(audit.decisions()[0].place, PolicyPlace::ToolCall);
}
