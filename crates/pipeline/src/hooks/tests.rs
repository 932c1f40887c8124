use std::sync::Arc;

use sluice_store::KeyInfo;
use sluice_types::{ChatRequest, StreamEvent};

use super::*;

fn caller() -> Caller {
    Caller {
        key: Arc::new(KeyInfo {
            id: "key_1".into(),
            prefix: "sk-sluice-ab".into(),
            name: "t".into(),
            tenant: sluice_types::TenantId("acme".into()),
            organisation: Some("acme".into()),
            team: None,
            project: None,
            user: None,
            roles: Vec::new(),
            aliases: Vec::new(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            log_bodies: false,
        }),
    }
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
    fn reads_output(&self) -> bool {
        true
    }
    fn on_stream(&self) -> Option<Box<dyn StreamHook>> {
        Some(Box::new(ShoutStream {
            n: self.n,
            held: String::new(),
        }))
    }
}

impl StreamHook for ShoutStream {
    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), HookError> {
        match event {
            StreamEvent::TextDelta { text: t, .. } => {
                self.held.push_str(&t);
                if self.held.contains("forbidden") {
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

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), HookError> {
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
    fn on_stream(&self) -> Option<Box<dyn StreamHook>> {
        Some(Box::new(MarkStream))
    }
}

impl StreamHook for MarkStream {
    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), HookError> {
        out.push(match event {
            StreamEvent::TextDelta { choice, text: t } => text(choice, &format!("{t}!")),
            other => other,
        });
        Ok(())
    }
}

#[test]
fn stream_hooks_hold_back_rewrite_and_release_in_route_order() {
    let hooks = Hooks::new(vec![Arc::new(Shout { n: 5 }), Arc::new(Mark)]);
    assert!(hooks.read_output());
    let mut stream = hooks.on_stream().unwrap();
    // Held by the first hook: the second sees nothing yet.
    assert_eq!(stream.on_events(vec![text(0, "ab")]).unwrap(), vec![]);
    // Released, uppercased, then marked by the second.
    assert_eq!(
        stream.on_events(vec![text(0, "cde")]).unwrap(),
        vec![text(0, "ABCDE!")]
    );
    assert_eq!(stream.on_events(vec![text(0, "fg")]).unwrap(), vec![]);
    // What the first still holds at the end goes through the second too.
    assert_eq!(stream.finish().unwrap(), vec![text(0, "FG!")]);
}

#[test]
fn a_stream_hook_can_stop_the_stream_with_an_error() {
    let hooks = Hooks::new(vec![Arc::new(Shout { n: 100 })]);
    let mut stream = hooks.on_stream().unwrap();
    assert_eq!(
        stream.on_events(vec![text(0, "this is forb")]).unwrap(),
        vec![]
    );
    let error = stream.on_events(vec![text(0, "idden")]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::PolicyBlocked);
    assert!(error.to_string().contains("forbidden word"), "{error}");
}

#[test]
fn routes_without_stream_hooks_have_no_stream_stage() {
    assert!(Hooks::default().on_stream().is_none());
    let size_only = Hooks::new(vec![Arc::new(RequestSize {
        max_input_tokens: 10,
    })]);
    assert!(size_only.on_stream().is_none());
    assert!(!size_only.read_output());
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
    let mut short = request("short prompt");
    assert!(matches!(
        hooks.on_request(context, &mut short),
        Ok(Verdict::Continue)
    ));
    let mut long = request(&"word ".repeat(100));
    let estimate = crate::tokens::estimate_input(&long);
    match hooks.on_request(context, &mut long) {
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
    let mut long = request(&"word ".repeat(100));
    assert!(matches!(
        answer_first.on_request(context, &mut long),
        Ok(Verdict::Answer(answer)) if answer.model == "canned"
    ));
    let refuse_first = Hooks::new(vec![
        Arc::new(RequestSize {
            max_input_tokens: 1,
        }),
        Arc::new(Canned),
    ]);
    assert!(refuse_first.on_request(context, &mut long).is_err());
}
