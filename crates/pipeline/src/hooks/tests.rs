use std::sync::Arc;

use sluice_types::record::{Audit, PolicyAction, PolicyPlace};
use sluice_types::{ChatRequest, StreamEvent};

use super::*;

/// A caller holding no role.
fn caller() -> Caller {
    crate::test_support::caller(&[])
}

fn request(text: &str) -> ChatRequest {
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]});
    sluice_wire::openai::decode_chat_request(body.to_string().as_bytes()).unwrap()
}

fn text(choice: u32, text: &str) -> StreamEvent {
    StreamEvent::TextDelta {
        choice,
        text: text.into(),
    }
}

/// Holds text back until it has `n` characters, then lets it out uppercased; a stream that
/// says `forbidden` is stopped.
#[derive(Debug)]
struct Shout {
    n: usize,
}

struct ShoutStream {
    n: usize,
    held: String,
}

impl Hook for Shout {
    fn name(&self) -> &'static str {
        "shout"
    }
    fn on_request(
        &self,
        _context: HookContext<'_>,
        _request: &mut ChatRequest,
        audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        audit.note("shout", "all", PolicyAction::Flag, PolicyPlace::Request, 1);
        Ok(Verdict::Watch(Box::new(ShoutStream {
            n: self.n,
            held: String::new(),
        })))
    }
}

impl AnswerHook for ShoutStream {
    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        match event {
            StreamEvent::TextDelta { text: t, .. } => {
                self.held.push_str(&t);
                if self.held.contains("forbidden") {
                    audit.note(
                        "shout",
                        "forbidden",
                        PolicyAction::Block,
                        PolicyPlace::Response,
                        1,
                    );
                    return Err(HookError::OutputBlocked {
                        hook: "shout",
                        reason: "a forbidden word".into(),
                    });
                }
                if self.held.len() >= self.n {
                    out.push(text(0, &std::mem::take(&mut self.held).to_uppercase()));
                }
            }
            other => out.push(other),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>, _audit: &mut Audit) -> Result<(), HookError> {
        if !self.held.is_empty() {
            out.push(text(0, &std::mem::take(&mut self.held).to_uppercase()));
        }
        Ok(())
    }
}

/// Appends a mark to every text delta.
#[derive(Debug)]
struct Mark;

struct MarkStream;

impl Hook for Mark {
    fn name(&self) -> &'static str {
        "mark"
    }
    fn on_request(
        &self,
        _context: HookContext<'_>,
        _request: &mut ChatRequest,
        _audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        Ok(Verdict::Watch(Box::new(MarkStream)))
    }
}

impl AnswerHook for MarkStream {
    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
        _audit: &mut Audit,
    ) -> Result<(), HookError> {
        out.push(match event {
            StreamEvent::TextDelta { choice, text: t } => text(choice, &format!("{t}!")),
            other => other,
        });
        Ok(())
    }
}

/// Starts the route's hooks on a short request: their watchers.
fn watch(hooks: &Hooks, audit: &mut Audit) -> Watchers {
    let caller = caller();
    let context = HookContext {
        caller: &caller,
        alias: "m",
    };
    let started = hooks
        .on_request(context, &mut request("hi"), audit)
        .unwrap();
    assert!(started.answer.is_none());
    started.watchers
}

#[test]
fn stream_hooks_hold_back_rewrite_and_release_in_route_order() {
    let hooks = Hooks::new(vec![Arc::new(Shout { n: 5 }), Arc::new(Mark)]);
    let mut audit = Audit::default();
    let mut stream = watch(&hooks, &mut audit);
    assert!(stream.read_output());
    // Held by the first hook: the second sees nothing yet.
    assert_eq!(
        stream.on_events(vec![text(0, "ab")], &mut audit).unwrap(),
        vec![]
    );
    // Released, uppercased, then marked by the second.
    assert_eq!(
        stream.on_events(vec![text(0, "cde")], &mut audit).unwrap(),
        vec![text(0, "ABCDE!")]
    );
    assert_eq!(
        stream.on_events(vec![text(0, "fg")], &mut audit).unwrap(),
        vec![]
    );
    // What the first still holds at the end goes through the second too.
    assert_eq!(stream.finish(&mut audit).unwrap(), vec![text(0, "FG!")]);
    assert_eq!(audit.decisions().len(), 1, "{audit:?}");
}

#[test]
fn a_stream_hook_can_stop_the_stream_with_an_error() {
    let hooks = Hooks::new(vec![Arc::new(Shout { n: 100 })]);
    let mut audit = Audit::default();
    let mut stream = watch(&hooks, &mut audit);
    assert_eq!(
        stream
            .on_events(vec![text(0, "this is forb")], &mut audit)
            .unwrap(),
        vec![]
    );
    let error = stream
        .on_events(vec![text(0, "idden")], &mut audit)
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PolicyBlocked);
    assert!(error.to_string().contains("forbidden word"), "{error}");
    let blocked = &audit.decisions()[1];
    assert_eq!(
        (blocked.rule.as_str(), blocked.action, blocked.place),
        ("forbidden", PolicyAction::Block, PolicyPlace::Response)
    );
}

#[test]
fn routes_whose_hooks_do_not_watch_answers_pass_them_through() {
    let mut audit = Audit::default();
    assert!(!watch(&Hooks::default(), &mut audit).read_output());
    let size_only = Hooks::new(vec![Arc::new(RequestSize {
        max_input_tokens: 10,
    })]);
    assert!(!watch(&size_only, &mut audit).read_output());
    assert!(audit.is_empty());
}

#[test]
fn request_size_refuses_prompts_over_the_bound_and_passes_the_rest() {
    let caller = caller();
    let context = HookContext {
        caller: &caller,
        alias: "small",
    };
    let hooks = Hooks::new(vec![Arc::new(RequestSize {
        max_input_tokens: 10,
    })]);
    let mut audit = Audit::default();
    let mut short = request("short prompt");
    assert!(matches!(
        hooks.on_request(context, &mut short, &mut audit),
        Ok(Started { answer: None, .. })
    ));
    let mut long = request(&"word ".repeat(100));
    let estimate = crate::tokens::estimate_input(&long);
    match hooks
        .on_request(context, &mut long, &mut audit)
        .map(|s| s.answer)
    {
        Err(HookError::PromptTooLarge {
            alias,
            estimate: e,
            limit,
        }) => assert_eq!((alias.as_str(), e, limit), ("small", estimate, 10)),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Answers every request itself.
#[derive(Debug)]
struct Canned;

impl Hook for Canned {
    fn name(&self) -> &'static str {
        "canned"
    }
    fn on_request(
        &self,
        _context: HookContext<'_>,
        _request: &mut ChatRequest,
        _audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        Ok(Verdict::Answer(Box::new(ChatResponse {
            id: "canned-1".into(),
            model: "canned".into(),
            created: 0,
            choices: Vec::new(),
            usage: None,
            system_fingerprint: None,
        })))
    }
}

#[test]
fn the_first_hook_that_answers_or_refuses_wins() {
    let caller = caller();
    let context = HookContext {
        caller: &caller,
        alias: "m",
    };
    let answer_first = Hooks::new(vec![
        Arc::new(Canned),
        Arc::new(RequestSize {
            max_input_tokens: 1,
        }),
    ]);
    let mut audit = Audit::default();
    let mut long = request(&"word ".repeat(100));
    assert!(matches!(
        answer_first.on_request(context, &mut long, &mut audit),
        Ok(Started { answer: Some(answer), .. }) if answer.model == "canned"
    ));
    let refuse_first = Hooks::new(vec![
        Arc::new(RequestSize {
            max_input_tokens: 1,
        }),
        Arc::new(Canned),
    ]);
    assert!(
        refuse_first
            .on_request(context, &mut long, &mut audit)
            .is_err()
    );
}
