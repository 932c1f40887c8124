use std::sync::Arc;

use serde_json::json;
use sluice_types::record::SchemaCheck;
use sluice_types::{
    ChatRequest, ChatResponse, Choice, FinishReason, Part, ResponseFormat, StreamEvent, Tool,
    ToolCall, ToolChoice,
};

use super::{StreamCheck, Structured, repair};

fn request(format: Option<ResponseFormat>) -> ChatRequest {
    let mut req = sluice_wire::openai::decode_chat_request(
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .unwrap();
    req.response_format = format;
    req
}

fn city() -> ResponseFormat {
    ResponseFormat::JsonSchema {
        name: "city".into(),
        description: None,
        schema: json!({
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
            "additionalProperties": false,
        }),
        strict: Some(true),
    }
}

fn answer(parts: Vec<Part>) -> ChatResponse {
    ChatResponse {
        id: "r".into(),
        model: "m".into(),
        created: 1,
        choices: vec![Choice {
            index: 0,
            parts,
            refusal: None,
            finish_reason: Some(FinishReason::EndTurn),
            logprobs: None,
        }],
        usage: None,
        system_fingerprint: None,
    }
}

fn structured(format: ResponseFormat) -> Structured {
    Structured::of(&request(Some(format))).unwrap().unwrap()
}

#[test]
fn repair_finds_the_value_inside_fences_and_prose() {
    assert_eq!(repair("```json\n{\"a\": 1}\n```"), Some("{\"a\": 1}"));
    assert_eq!(
        repair("Sure! Here it is: [1, 2] Hope it helps."),
        Some("[1, 2]")
    );
    // Braces inside strings, escaped quotes, nesting.
    let tricky = r#"x {"s": "} \" {", "n": {"m": [1, {"k": "]"}]}} y"#;
    assert_eq!(
        repair(tricky),
        Some(r#"{"s": "} \" {", "n": {"m": [1, {"k": "]"}]}}"#)
    );
    assert_eq!(repair("no json here"), None);
    assert_eq!(repair("{\"unclosed\": 1"), None);
}

#[test]
fn a_valid_answer_passes_unchanged_and_a_fenced_one_is_repaired_in_place() {
    let check = structured(city());
    let mut valid = answer(vec![Part::text(r#"{"name":"Lyon"}"#)]);
    assert_eq!(check.vet(&mut valid), Ok(SchemaCheck::Valid));
    assert!(check.holds(&valid));

    let mut fenced = answer(vec![Part::text("```json\n{\"name\":\"Lyon\"}\n```")]);
    assert!(!check.holds(&fenced));
    assert_eq!(check.vet(&mut fenced), Ok(SchemaCheck::Repaired));
    assert_eq!(
        fenced.choices[0].parts,
        vec![Part::text(r#"{"name":"Lyon"}"#)]
    );
    assert!(check.holds(&fenced));
}

#[test]
fn an_answer_that_breaks_the_schema_is_a_violation_that_says_where() {
    let check = structured(city());
    let mut wrong = answer(vec![Part::text(r#"{"city":"Lyon"}"#)]);
    let violation = check.vet(&mut wrong).unwrap_err();
    assert!(violation.0.starts_with("at /:"), "{violation:?}");
    let mut typed = answer(vec![Part::text(r#"{"name": 7}"#)]);
    let violation = check.vet(&mut typed).unwrap_err();
    assert!(violation.0.contains("/name"), "{violation:?}");
    let mut prose = answer(vec![Part::text("The city is Lyon.")]);
    assert!(check.vet(&mut prose).unwrap_err().0.contains("not JSON"));
    // Repair does not make an invalid value valid.
    let mut fenced_wrong = answer(vec![Part::text("```\n{\"city\":\"Lyon\"}\n```")]);
    assert!(check.vet(&mut fenced_wrong).is_err());
    let mut refused = answer(vec![]);
    refused.choices[0].refusal = Some("no".into());
    assert!(check.vet(&mut refused).is_err());
}

#[test]
fn json_object_wants_an_object() {
    let check = structured(ResponseFormat::JsonObject);
    assert_eq!(
        check.vet(&mut answer(vec![Part::text("{}")])),
        Ok(SchemaCheck::Valid)
    );
    assert!(check.vet(&mut answer(vec![Part::text("[1]")])).is_err());
    assert!(check.vet(&mut answer(vec![Part::text("42")])).is_err());
}

#[test]
fn a_forced_tool_is_checked_on_its_arguments() {
    let mut req = request(None);
    req.tools.push(Tool {
        name: "get_city".into(),
        description: None,
        parameters: json!({"type": "object", "required": ["name"]}),
        strict: None,
        cache_control: None,
    });
    req.tool_choice = Some(ToolChoice::Named("get_city".into()));
    let check = Structured::of(&req).unwrap().unwrap();
    let call = |args: &str| {
        answer(vec![Part::ToolCall(ToolCall {
            id: "c".into(),
            name: "get_city".into(),
            arguments: args.into(),
        })])
    };
    assert_eq!(
        check.vet(&mut call(r#"{"name":"Lyon"}"#)),
        Ok(SchemaCheck::Valid)
    );
    assert!(check.vet(&mut call("{}")).is_err());
    let text = check.vet(&mut answer(vec![Part::text("{}")])).unwrap_err();
    assert!(text.0.contains("does not call the forced tool"), "{text:?}");
    // Tools merely offered ask for no structure.
    req.tool_choice = Some(ToolChoice::Auto);
    assert!(Structured::of(&req).unwrap().is_none());
}

#[test]
fn a_schema_that_does_not_compile_is_the_clients_error() {
    let bad = ResponseFormat::JsonSchema {
        name: "x".into(),
        description: None,
        schema: json!({"type": "no-such-type"}),
        strict: None,
    };
    let error = Structured::of(&request(Some(bad))).unwrap_err();
    assert_eq!(error.what, "response_format");
    assert!(Structured::of(&request(None)).unwrap().is_none());
    assert!(
        Structured::of(&request(Some(ResponseFormat::Text)))
            .unwrap()
            .is_none()
    );
}

fn stream(check: &mut StreamCheck, deltas: &[&str]) -> String {
    let mut sent = String::new();
    for delta in deltas {
        let mut event = StreamEvent::TextDelta {
            choice: 0,
            text: (*delta).to_owned(),
        };
        check.observe(&mut event);
        let StreamEvent::TextDelta { text, .. } = event else {
            unreachable!()
        };
        sent.push_str(&text);
    }
    sent
}

#[test]
fn a_stream_passes_only_the_json_value_and_is_checked_at_the_end() {
    let check = Arc::new(structured(city()));
    let mut clean = StreamCheck::new(check.clone());
    let sent = stream(&mut clean, &["{\"na", "me\": \"Ly", "on\"}"]);
    assert_eq!(sent, r#"{"name": "Lyon"}"#);
    assert_eq!(clean.finish(), Ok(SchemaCheck::Valid));

    let mut fenced = StreamCheck::new(check.clone());
    let sent = stream(
        &mut fenced,
        &["```js", "on\n{\"name\"", ": \"Lyon\"}\n``", "`"],
    );
    assert_eq!(sent, r#"{"name": "Lyon"}"#);
    assert_eq!(fenced.finish(), Ok(SchemaCheck::Repaired));

    let mut wrong = StreamCheck::new(check.clone());
    stream(&mut wrong, &["{\"city\": \"Lyon\"}"]);
    assert!(wrong.finish().is_err());

    let mut cut = StreamCheck::new(check.clone());
    stream(&mut cut, &["{\"name\": \"Ly"]);
    assert!(cut.finish().unwrap_err().0.contains("never closes"));

    let mut prose = StreamCheck::new(check);
    assert_eq!(stream(&mut prose, &["It is Lyon."]), "");
    assert!(prose.finish().unwrap_err().0.contains("no JSON value"));
}

#[test]
fn a_streamed_forced_tool_is_checked_on_its_arguments() {
    let mut req = request(None);
    req.tools.push(Tool {
        name: "get_city".into(),
        description: None,
        parameters: json!({"type": "object", "required": ["name"]}),
        strict: None,
        cache_control: None,
    });
    req.tool_choice = Some(ToolChoice::Named("get_city".into()));
    let structured = Arc::new(Structured::of(&req).unwrap().unwrap());
    let run = |args: &[&str]| {
        let mut check = StreamCheck::new(structured.clone());
        let mut events = vec![StreamEvent::ToolCallStart {
            choice: 0,
            index: 0,
            id: "c".into(),
            name: "get_city".into(),
        }];
        events.extend(args.iter().map(|a| StreamEvent::ToolCallDelta {
            choice: 0,
            index: 0,
            arguments: (*a).to_owned(),
        }));
        for event in &mut events {
            assert!(!check.observe(event), "arguments pass unchanged");
        }
        check.finish()
    };
    assert_eq!(run(&["{\"name\":", "\"Lyon\"}"]), Ok(SchemaCheck::Valid));
    assert!(run(&["{\"city\":", "\"Lyon\"}"]).is_err());
    let no_call = StreamCheck::new(structured.clone());
    assert!(no_call.finish().is_err());
}
