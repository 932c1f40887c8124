use serde_json::{Value, json};
use sluice_policy::stops::OnCollision;
use sluice_types::record::Audit;
use sluice_types::{ChatRequest, ChatResponse, Choice, FinishReason, Part, StreamEvent};

use super::*;
use crate::Caller;

/// A caller holding no role.
fn caller() -> Caller {
    crate::test_support::caller(&[])
}

fn request(messages: Value, stop: &[&str]) -> ChatRequest {
    let body = json!({"model": "m", "messages": messages, "stop": stop});
    sluice_wire::openai::decode_chat_request(body.to_string().as_bytes()).unwrap()
}

fn run(
    guard: StopGuard,
    request: &mut ChatRequest,
    audit: &mut Audit,
) -> Result<Verdict, HookError> {
    let caller = caller();
    let context = HookContext {
        caller: &caller,
        alias: "m",
    };
    guard.on_request(context, request, audit)
}

fn guard(on_collision: OnCollision, max_upstream: Option<usize>) -> StopGuard {
    StopGuard {
        on_collision,
        max_upstream,
    }
}

fn summary(audit: &Audit) -> String {
    audit.summary().unwrap_or_default()
}

fn user_text(request: &ChatRequest, m: usize) -> String {
    match &request.messages[m].parts[0] {
        Part::Text { text, .. } => text.clone(),
        other => panic!("{other:?}"),
    }
}

fn conversation() -> Value {
    json!([
        {"role": "system", "content": "Answers end with END."},
        {"role": "user", "content": "Say END twice: END"},
    ])
}

#[test]
fn a_request_without_stop_sequences_is_not_watched() {
    let mut request = request(conversation(), &[]);
    let mut audit = Audit::default();
    assert!(matches!(
        run(
            guard(OnCollision::Refuse, Some(1)),
            &mut request,
            &mut audit
        ),
        Ok(Verdict::Continue)
    ));
    assert!(audit.is_empty());
}

#[test]
fn a_collision_is_warned_about_and_sent_unchanged() {
    let mut request = request(conversation(), &["END"]);
    let mut audit = Audit::default();
    run(guard(OnCollision::Warn, None), &mut request, &mut audit).unwrap();
    assert_eq!(user_text(&request, 1), "Say END twice: END");
    // The system prompt is the application's own, not user content.
    assert_eq!(summary(&audit), "stop_sequences:collision:warn:request=2");
}

#[test]
fn a_collision_is_escaped() {
    let mut request = request(conversation(), &["END", "\n"]);
    let mut audit = Audit::default();
    run(guard(OnCollision::Escape, None), &mut request, &mut audit).unwrap();
    assert_eq!(user_text(&request, 1), "Say E\u{200B}ND twice: E\u{200B}ND");
    assert_eq!(request.stop, ["END", "\n"]);
    assert_eq!(summary(&audit), "stop_sequences:collision:escape:request=2");
}

#[test]
fn a_one_character_collision_cannot_be_escaped_and_is_warned_about() {
    let mut request = request(json!([{"role": "user", "content": "a\nb"}]), &["\n"]);
    let mut audit = Audit::default();
    run(guard(OnCollision::Escape, None), &mut request, &mut audit).unwrap();
    assert_eq!(user_text(&request, 0), "a\nb");
    assert_eq!(summary(&audit), "stop_sequences:collision:warn:request=1");
}

#[test]
fn a_collision_is_refused_naming_the_sequence_and_the_message() {
    let mut request = request(conversation(), &["STOP", "END"]);
    let mut audit = Audit::default();
    let error = run(guard(OnCollision::Refuse, None), &mut request, &mut audit).unwrap_err();
    assert_eq!(
        error,
        HookError::StopSequenceInContent {
            index: 1,
            sequence: "END".into(),
            message: 1
        }
    );
    assert!(
        error
            .to_string()
            .starts_with("stop sequence 1 (\"END\") appears in the content of message 1"),
        "{error}"
    );
    assert_eq!(summary(&audit), "stop_sequences:collision:block:request=1");
}

#[test]
fn tool_results_are_user_content() {
    let messages = json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "output ### more"},
    ]);
    let mut request = request(messages, &["###"]);
    let error = run(
        guard(OnCollision::Refuse, None),
        &mut request,
        &mut Audit::default(),
    )
    .unwrap_err();
    assert!(matches!(
        error,
        HookError::StopSequenceInContent { message: 2, .. }
    ));
}

fn watch(stop: &[&str], max: usize, audit: &mut Audit) -> (ChatRequest, Box<dyn AnswerHook>) {
    let mut request = request(json!([{"role": "user", "content": "hi"}]), stop);
    match run(guard(OnCollision::Warn, Some(max)), &mut request, audit).unwrap() {
        Verdict::Watch(hook) => (request, hook),
        other => panic!("{other:?}"),
    }
}

fn answer(parts: Vec<Part>, reason: FinishReason) -> ChatResponse {
    ChatResponse {
        id: "r".into(),
        model: "m".into(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            parts,
            refusal: None,
            finish_reason: Some(reason),
            logprobs: None,
        }],
        usage: None,
        system_fingerprint: None,
    }
}

#[test]
fn sequences_past_the_limit_are_kept_back_and_enforced_on_a_whole_answer() {
    let mut audit = Audit::default();
    let (request, mut hook) = watch(&["a1", "b2", "<DONE>"], 2, &mut audit);
    assert_eq!(request.stop, ["a1", "b2"]);
    let mut response = answer(
        vec![Part::text("one two <DONE> three")],
        FinishReason::EndTurn,
    );
    hook.on_response(&mut response, &mut audit).unwrap();
    assert_eq!(response.choices[0].parts, vec![Part::text("one two ")]);
    assert_eq!(
        response.choices[0].finish_reason,
        Some(FinishReason::StopSequence(Some("<DONE>".into())))
    );
    assert_eq!(
        summary(&audit),
        "stop_sequences:enforced:enforce:response=1, stop_sequences:ended:flag:response=1"
    );
}

#[test]
fn an_answer_the_provider_ended_at_a_stop_sequence_is_flagged() {
    let mut audit = Audit::default();
    let (_, mut hook) = watch(&["END"], 4, &mut audit);
    let mut response = answer(
        vec![Part::text("done")],
        FinishReason::StopSequence(Some("END".into())),
    );
    hook.on_response(&mut response, &mut audit).unwrap();
    assert_eq!(response.choices[0].parts, vec![Part::text("done")]);
    assert_eq!(summary(&audit), "stop_sequences:ended:flag:response=1");
}

fn text(t: &str) -> StreamEvent {
    StreamEvent::TextDelta {
        choice: 0,
        text: t.into(),
    }
}

#[test]
fn a_stream_is_cut_at_an_enforced_sequence_split_across_deltas() {
    let mut audit = Audit::default();
    let (_, mut hook) = watch(&["x", "<DONE>"], 1, &mut audit);
    let mut out = Vec::new();
    for event in [
        text("one <"),
        text("DO"),
        text("NE> tw"),
        text("o"),
        StreamEvent::ToolCallStart {
            choice: 0,
            index: 0,
            id: "c".into(),
            name: "f".into(),
        },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::EndTurn,
        },
    ] {
        hook.on_event(event, &mut out, &mut audit).unwrap();
    }
    hook.finish(&mut out, &mut audit).unwrap();
    assert_eq!(
        out,
        vec![
            text("one "),
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::StopSequence(Some("<DONE>".into()))
            }
        ]
    );
    assert_eq!(
        summary(&audit),
        "stop_sequences:enforced:enforce:response=1, stop_sequences:ended:flag:response=1"
    );
}

#[test]
fn a_stream_that_never_completes_a_sequence_is_released_whole() {
    let mut audit = Audit::default();
    let (_, mut hook) = watch(&["x", "<DONE>"], 1, &mut audit);
    let mut out = Vec::new();
    for event in [
        text("a <DO"),
        text("g> b <"),
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::EndTurn,
        },
    ] {
        hook.on_event(event, &mut out, &mut audit).unwrap();
    }
    let texts: String = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, "a <DOg> b <");
    assert_eq!(
        out.last(),
        Some(&StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::EndTurn
        })
    );
    assert!(audit.is_empty());
}
