use std::sync::Arc;

use sluice_dlp::{Detector, Scanner};
use sluice_types::record::{Audit, PolicyAction, PolicyPlace};
use sluice_types::{ChatRequest, ChatResponse, Choice, FinishReason, Part, StreamEvent};

use super::*;
use crate::Caller;

use crate::test_support::caller;

fn dlp(actions: &[(&str, DlpAction)], roles: Vec<(String, Overrides)>, answers: bool) -> Dlp {
    let scanner = Scanner::new(&Detector::ALL, Vec::new()).unwrap();
    let actions = actions
        .iter()
        .map(|(name, action)| (name.to_string(), *action))
        .collect();
    Dlp::new(Arc::new(scanner), actions, roles, answers)
}

fn request(body: serde_json::Value) -> ChatRequest {
    sluice_wire::openai::decode_chat_request(body.to_string().as_bytes()).unwrap()
}

fn user_text(request: &ChatRequest, message: usize) -> &str {
    match &request.messages[message].parts[0] {
        Part::Text { text, .. } => text,
        other => panic!("not text: {other:?}"),
    }
}

fn start(
    hook: &Dlp,
    caller: &Caller,
    request: &mut ChatRequest,
    audit: &mut Audit,
) -> Result<Verdict, HookError> {
    let context = HookContext { caller, alias: "m" };
    hook.on_request(context, request, audit)
}

fn count(audit: &Audit, rule: &str, action: PolicyAction, place: PolicyPlace) -> u32 {
    audit
        .decisions()
        .iter()
        .filter(|d| d.rule == rule && d.action == action && d.place == place)
        .map(|d| d.count)
        .sum()
}

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";

#[test]
fn a_request_is_scrubbed_per_detector_with_one_placeholder_per_value() {
    let hook = dlp(
        &[
            ("email", DlpAction::Pseudonymise),
            ("payment_card", DlpAction::Redact),
            ("ip_address", DlpAction::Log),
        ],
        Vec::new(),
        false,
    );
    let mut req = request(serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": format!("Support agent for {EMAIL}")},
            {"role": "user", "content": format!("Mail {EMAIL} and bob@example.org, card {CARD}, from 192.0.2.7")},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "lookup", "arguments": format!("{{\"email\":\"{EMAIL}\"}}")}}]},
            {"role": "tool", "tool_call_id": "c1", "content": format!("card on file: {CARD}")}
        ]
    }));
    let mut audit = Audit::default();
    let verdict = start(&hook, &caller(&[]), &mut req, &mut audit).unwrap();
    // Placeholders were given: the answer is watched to restore them.
    assert!(matches!(verdict, Verdict::Watch(_)));
    assert_eq!(user_text(&req, 0), "Support agent for <EMAIL_1>");
    assert_eq!(
        user_text(&req, 1),
        "Mail <EMAIL_1> and <EMAIL_2>, card [REDACTED:payment_card], from 192.0.2.7"
    );
    match &req.messages[2].parts[0] {
        Part::ToolCall(call) => assert_eq!(call.arguments, r#"{"email":"<EMAIL_1>"}"#),
        other => panic!("{other:?}"),
    }
    match &req.messages[3].parts[0] {
        Part::ToolResult { content, .. } => {
            assert_eq!(
                content,
                &vec![Part::text("card on file: [REDACTED:payment_card]")]
            )
        }
        other => panic!("{other:?}"),
    }
    let pseudonymised = count(
        &audit,
        "email",
        PolicyAction::Pseudonymise,
        PolicyPlace::Request,
    );
    assert_eq!(pseudonymised, 3);
    assert_eq!(
        count(
            &audit,
            "email",
            PolicyAction::Pseudonymise,
            PolicyPlace::ToolCall
        ),
        1
    );
    assert_eq!(
        count(
            &audit,
            "payment_card",
            PolicyAction::Redact,
            PolicyPlace::ToolResult
        ),
        1
    );
    assert_eq!(
        count(
            &audit,
            "ip_address",
            PolicyAction::Log,
            PolicyPlace::Request
        ),
        1
    );
    // The audit never holds a value.
    let summary = audit.summary().unwrap();
    assert!(
        !summary.contains("example") && !summary.contains("4111"),
        "{summary}"
    );
}

#[test]
fn a_blocked_detector_refuses_the_request_and_a_role_can_change_the_action() {
    let roles = vec![(
        "compliance".to_string(),
        Overrides::from([
            ("secret".to_string(), Some(DlpAction::Log)),
            ("email".to_string(), None),
        ]),
    )];
    let hook = dlp(
        &[("secret", DlpAction::Block), ("email", DlpAction::Redact)],
        roles,
        false,
    );
    let body = serde_json::json!({"model": "m", "messages": [
        {"role": "user", "content": "my key is AKIAIOSFODNN7EXAMPLE ok, a@example.com"}]});
    let mut audit = Audit::default();
    let error = start(&hook, &caller(&[]), &mut request(body.clone()), &mut audit).unwrap_err();
    assert!(
        matches!(&error, HookError::DlpBlocked { detector, place } if detector == "secret" && *place == "request")
    );
    assert!(error.to_string().contains("`secret`"), "{error}");
    assert!(!error.to_string().contains("AKIA"), "{error}");
    assert_eq!(
        count(&audit, "secret", PolicyAction::Block, PolicyPlace::Request),
        1
    );

    let mut audit = Audit::default();
    let mut req = request(body);
    let verdict = start(&hook, &caller(&["compliance"]), &mut req, &mut audit).unwrap();
    assert!(matches!(verdict, Verdict::Continue));
    // The role logs the secret and turns email off.
    assert_eq!(
        user_text(&req, 0),
        "my key is AKIAIOSFODNN7EXAMPLE ok, a@example.com"
    );
    assert_eq!(
        count(&audit, "secret", PolicyAction::Log, PolicyPlace::Request),
        1
    );
}

fn watcher(hook: &Dlp, text: &str, audit: &mut Audit) -> Box<dyn AnswerHook> {
    let mut req = request(serde_json::json!({"model": "m", "messages": [
        {"role": "user", "content": text}]}));
    match start(hook, &caller(&[]), &mut req, audit).unwrap() {
        Verdict::Watch(watcher) => watcher,
        other => panic!("{other:?}"),
    }
}

fn answer(text: &str) -> ChatResponse {
    ChatResponse {
        id: "r".into(),
        model: "m".into(),
        created: 1,
        choices: vec![Choice {
            index: 0,
            parts: vec![Part::text(text)],
            refusal: None,
            finish_reason: Some(FinishReason::EndTurn),
            logprobs: None,
        }],
        usage: None,
        system_fingerprint: None,
    }
}

#[test]
fn an_answer_gets_its_values_back_and_new_findings_acted_on() {
    let hook = dlp(
        &[
            ("email", DlpAction::Pseudonymise),
            ("payment_card", DlpAction::Redact),
        ],
        Vec::new(),
        true,
    );
    let mut audit = Audit::default();
    let mut watcher = watcher(&hook, &format!("write to {EMAIL}"), &mut audit);
    let mut response = answer(&format!(
        "Sent to <EMAIL_1> (not <EMAIL_9>); card {CARD}; copy to ann@example.net"
    ));
    watcher.on_response(&mut response, &mut audit).unwrap();
    assert_eq!(
        response.choices[0].parts,
        vec![Part::text(format!(
            "Sent to {EMAIL} (not <EMAIL_9>); card [REDACTED:payment_card]; copy to ann@example.net"
        ))]
    );
    // A value the model wrote itself is not pseudonymised (the client reads it): logged.
    assert_eq!(
        count(&audit, "email", PolicyAction::Log, PolicyPlace::Response),
        1
    );
    assert_eq!(
        count(
            &audit,
            "payment_card",
            PolicyAction::Redact,
            PolicyPlace::Response
        ),
        1
    );
}

fn text(choice: u32, text: &str) -> StreamEvent {
    StreamEvent::TextDelta {
        choice,
        text: text.into(),
    }
}

/// Streams `chunks` through the watcher; returns each choice's text as the client reads it
/// and the events in order.
fn stream(
    watcher: &mut dyn AnswerHook,
    events: Vec<StreamEvent>,
    audit: &mut Audit,
) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    for event in events {
        watcher.on_event(event, &mut out, audit).unwrap();
    }
    watcher.finish(&mut out, audit).unwrap();
    out
}

fn joined(events: &[StreamEvent], choice: u32) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { choice: c, text } if *c == choice => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_stream_restores_placeholders_and_redacts_values_split_across_chunks() {
    let hook = dlp(
        &[
            ("email", DlpAction::Pseudonymise),
            ("payment_card", DlpAction::Redact),
        ],
        Vec::new(),
        true,
    );
    let whole = format!("Hi <EMAIL_1>, your card {CARD} is noted. Bye");
    let expected = format!("Hi {EMAIL}, your card [REDACTED:payment_card] is noted. Bye");
    // Every way of cutting the answer in two, and in chunks of 3 bytes.
    let mut cuts: Vec<Vec<String>> = (1..whole.len())
        .map(|at| vec![whole[..at].to_string(), whole[at..].to_string()])
        .collect();
    cuts.push(
        whole
            .as_bytes()
            .chunks(3)
            .map(|c| String::from_utf8(c.to_vec()).unwrap())
            .collect(),
    );
    for chunks in cuts {
        let mut audit = Audit::default();
        let mut watcher = watcher(&hook, &format!("mail {EMAIL}"), &mut audit);
        let mut events: Vec<StreamEvent> = chunks.iter().map(|c| text(0, c)).collect();
        events.push(StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::EndTurn,
        });
        let out = stream(watcher.as_mut(), events, &mut audit);
        assert_eq!(joined(&out, 0), expected, "{chunks:?}");
        // The choice's text is all out before its end.
        assert!(
            matches!(out.last(), Some(StreamEvent::Finish { .. })),
            "{out:?}"
        );
        assert_eq!(
            count(
                &audit,
                "payment_card",
                PolicyAction::Redact,
                PolicyPlace::Response
            ),
            1,
            "{chunks:?}"
        );
    }
}

#[test]
fn a_stream_holds_back_only_what_could_still_match() {
    let hook = dlp(&[("payment_card", DlpAction::Redact)], Vec::new(), true);
    let mut audit = Audit::default();
    let mut req = request(serde_json::json!({"model": "m", "messages": [
        {"role": "user", "content": "hi"}]}));
    let Verdict::Watch(mut watcher) = start(&hook, &caller(&[]), &mut req, &mut audit).unwrap()
    else {
        panic!("answers are scanned: the hook watches them");
    };
    let mut out = Vec::new();
    watcher
        .on_event(
            text(0, "Plain words go out at once. Card 4111 1111"),
            &mut out,
            &mut audit,
        )
        .unwrap();
    let released = joined(&out, 0);
    assert!(
        released.starts_with("Plain words go out at once."),
        "{released:?}"
    );
    assert!(!released.contains("4111"), "{released:?}");
}

#[test]
fn tool_call_arguments_are_scanned_per_call_and_released_before_the_next() {
    let hook = dlp(&[("payment_card", DlpAction::Redact)], Vec::new(), true);
    let mut audit = Audit::default();
    let mut watcher = watcher(&hook, "pay", &mut audit);
    let start = |index: u32| StreamEvent::ToolCallStart {
        choice: 0,
        index,
        id: format!("c{index}"),
        name: "pay".into(),
    };
    let args = |index: u32, arguments: &str| StreamEvent::ToolCallDelta {
        choice: 0,
        index,
        arguments: arguments.into(),
    };
    let out = stream(
        watcher.as_mut(),
        vec![
            start(0),
            args(0, "{\"card\":\"4111 1111 "),
            args(0, "1111 1111\"}"),
            start(1),
            args(1, "{\"card\":\"none\"}"),
        ],
        &mut audit,
    );
    let arguments = |index: u32| -> String {
        out.iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallDelta {
                    index: i,
                    arguments,
                    ..
                } if *i == index => Some(arguments.as_str()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(arguments(0), r#"{"card":"[REDACTED:payment_card]"}"#);
    assert_eq!(arguments(1), r#"{"card":"none"}"#);
    // Call 0's arguments are all out before call 1 starts.
    let second = out
        .iter()
        .position(|e| matches!(e, StreamEvent::ToolCallStart { index: 1, .. }))
        .unwrap();
    assert!(
        out[second..]
            .iter()
            .all(|e| !matches!(e, StreamEvent::ToolCallDelta { index: 0, .. }))
    );
    assert_eq!(
        count(
            &audit,
            "payment_card",
            PolicyAction::Redact,
            PolicyPlace::ToolCall
        ),
        1
    );
}

#[test]
fn a_blocked_value_in_an_answer_ends_it() {
    let hook = dlp(&[("secret", DlpAction::Block)], Vec::new(), true);
    let mut audit = Audit::default();
    let mut watcher = watcher(&hook, "hi", &mut audit);
    let mut response = answer("here: AKIAIOSFODNN7EXAMPLE");
    let error = watcher.on_response(&mut response, &mut audit).unwrap_err();
    assert!(
        matches!(error, HookError::OutputBlocked { hook: "dlp", .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("AKIA"));
}

#[test]
fn requests_without_findings_on_routes_that_do_not_scan_answers_pass_through() {
    let hook = dlp(&[("email", DlpAction::Pseudonymise)], Vec::new(), false);
    let mut audit = Audit::default();
    let mut req = request(serde_json::json!({"model": "m", "messages": [
        {"role": "user", "content": "nothing to see"}]}));
    assert!(matches!(
        start(&hook, &caller(&[]), &mut req, &mut audit).unwrap(),
        Verdict::Continue
    ));
    assert!(audit.is_empty());
}
