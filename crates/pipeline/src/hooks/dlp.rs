//! DLP at egress: the `dlp` hook finds sensitive values (`sluice_dlp` detectors) in what a
//! request sends upstream and in what the answer brings back, and acts per detector:
//!
//! - `redact`: the value becomes `[REDACTED:DETECTOR]`, for good;
//! - `pseudonymise`: the value becomes a placeholder (`<EMAIL_1>`), the same one for the same
//!   value throughout the request, and the answer the client sees has the value back;
//! - `block`: the request is refused (`policy_blocked`), nothing is sent; in an answer, the
//!   answer is refused, a stream ends with an error event;
//! - `log`: let through, counted.
//!
//! Requests: system text, message text, tool results and tool-call arguments. Answers: text
//! and tool-call arguments, streams included, where a value split across chunks is still
//! found: only the bytes that could still complete a match (or a placeholder) are held back.
//! In answers, `pseudonymise` counts as `log` (the value comes from the model, and the reader
//! is the client). What is found goes to the audit (detector, action, where, how many),
//! never the value.

use std::collections::HashMap;
use std::sync::Arc;

use sluice_dlp::{Finding, Scanner, StreamScanner};
use sluice_types::record::{Audit, PolicyAction, PolicyPlace};
use sluice_types::{ChatRequest, ChatResponse, Part, StreamEvent};

use super::{AnswerHook, Hook, HookContext, HookError, Verdict};

const POLICY: &str = "dlp";

/// What to do with a detector's findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DlpAction {
    Redact,
    Pseudonymise,
    Block,
    Log,
}

impl DlpAction {
    fn audited(self) -> PolicyAction {
        match self {
            DlpAction::Redact => PolicyAction::Redact,
            DlpAction::Pseudonymise => PolicyAction::Pseudonymise,
            DlpAction::Block => PolicyAction::Block,
            DlpAction::Log => PolicyAction::Log,
        }
    }
}

/// Actions by detector name (built-in or custom). A detector without one is not acted on.
pub type Actions = HashMap<String, DlpAction>;

/// A role's changes to a route's actions: `None` turns a detector off for the role's keys.
pub type Overrides = HashMap<String, Option<DlpAction>>;

/// A route's DLP policy: one scanner over every detector any of its actions names.
#[derive(Debug)]
pub struct Dlp {
    scanner: Arc<Scanner>,
    actions: Arc<Actions>,
    /// Overrides for keys holding a role: the first role of the list the key holds wins;
    /// detectors it does not name keep the route's action.
    roles: Vec<(String, Arc<Overrides>)>,
    /// Scan answers too (not only what is sent upstream).
    answers: bool,
}

impl Dlp {
    pub fn new(
        scanner: Arc<Scanner>,
        actions: Actions,
        roles: Vec<(String, Overrides)>,
        answers: bool,
    ) -> Dlp {
        Dlp {
            scanner,
            actions: Arc::new(actions),
            roles: roles
                .into_iter()
                .map(|(role, overrides)| (role, Arc::new(overrides)))
                .collect(),
            answers,
        }
    }

    /// The actions that apply to a caller: its first role override over the route's.
    fn actions_for(&self, context: &HookContext<'_>) -> CallerActions {
        CallerActions {
            route: self.actions.clone(),
            role: self
                .roles
                .iter()
                .find(|(role, _)| context.caller.key.has_role(role))
                .map(|(_, overrides)| overrides.clone()),
        }
    }
}

/// One caller's actions: its role's overrides, else the route's. Shared, not copied, per
/// request.
#[derive(Clone)]
struct CallerActions {
    route: Arc<Actions>,
    role: Option<Arc<Overrides>>,
}

impl CallerActions {
    fn get(&self, detector: &str) -> Option<DlpAction> {
        match self.role.as_ref().and_then(|role| role.get(detector)) {
            Some(overridden) => *overridden,
            None => self.route.get(detector).copied(),
        }
    }
}

impl Hook for Dlp {
    fn name(&self) -> &'static str {
        POLICY
    }

    fn guards_counts(&self) -> bool {
        true
    }

    /// What an embeddings request sends is guarded as a prompt is (its placeholders have
    /// no answer to be restored in).
    fn on_embeddings(
        &self,
        context: HookContext<'_>,
        inputs: &mut [&mut String],
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        let mut scrub = Scrub {
            scanner: &self.scanner,
            actions: self.actions_for(&context),
            pseudonyms: Pseudonyms::default(),
        };
        inputs
            .iter_mut()
            .try_for_each(|text| scrub.text(text, PolicyPlace::Request, audit))
    }

    fn on_request(
        &self,
        context: HookContext<'_>,
        request: &mut ChatRequest,
        audit: &mut Audit,
    ) -> Result<Verdict, HookError> {
        let mut scrub = Scrub {
            scanner: &self.scanner,
            actions: self.actions_for(&context),
            pseudonyms: Pseudonyms::default(),
        };
        for part in &mut request.system {
            scrub.part(part, PolicyPlace::Request, audit)?;
        }
        for message in &mut request.messages {
            for part in &mut message.parts {
                scrub.part(part, PolicyPlace::Request, audit)?;
            }
        }
        let Scrub {
            actions,
            pseudonyms,
            ..
        } = scrub;
        if !self.answers && pseudonyms.is_empty() {
            return Ok(Verdict::Continue);
        }
        Ok(Verdict::Watch(Box::new(DlpAnswer {
            scanner: self.answers.then(|| self.scanner.clone()),
            actions,
            restore: Arc::new(pseudonyms.into_restore()),
            channels: HashMap::new(),
            current: HashMap::new(),
        })))
    }
}

/// Applies a request's actions to its texts.
struct Scrub<'a> {
    scanner: &'a Scanner,
    actions: CallerActions,
    pseudonyms: Pseudonyms,
}

impl Scrub<'_> {
    fn part(
        &mut self,
        part: &mut Part,
        place: PolicyPlace,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        match part {
            Part::Text { text, .. } => self.text(text, place, audit),
            Part::ToolCall(call) => self.text(&mut call.arguments, PolicyPlace::ToolCall, audit),
            Part::ToolResult { content, .. } => content
                .iter_mut()
                .try_for_each(|part| self.part(part, PolicyPlace::ToolResult, audit)),
            Part::Image { .. } => Ok(()),
        }
    }

    fn text(
        &mut self,
        text: &mut String,
        place: PolicyPlace,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        let findings = self.scanner.find(text);
        if findings.is_empty() {
            return Ok(());
        }
        let rewritten = rewrite(
            text,
            &findings,
            &self.actions,
            place,
            audit,
            Some(&mut self.pseudonyms),
        )?;
        *text = rewritten;
        Ok(())
    }
}

/// `text` with each finding acted on, counted in `audit`. A `block` finding refuses the
/// whole text (the others are still counted). Without `pseudonyms` (answers), pseudonymise
/// counts as log.
fn rewrite(
    text: &str,
    findings: &[Finding],
    actions: &CallerActions,
    place: PolicyPlace,
    audit: &mut Audit,
    mut pseudonyms: Option<&mut Pseudonyms>,
) -> Result<String, HookError> {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut blocked: Option<&str> = None;
    for finding in findings {
        let name = finding.detector.as_str();
        let Some(mut action) = actions.get(name) else {
            continue;
        };
        if action == DlpAction::Pseudonymise && pseudonyms.is_none() {
            action = DlpAction::Log;
        }
        audit.note(POLICY, name, action.audited(), place, 1);
        let value = &text[finding.range.clone()];
        let replacement = match action {
            DlpAction::Log => continue,
            DlpAction::Block => {
                blocked.get_or_insert(name);
                continue;
            }
            DlpAction::Redact => format!("[REDACTED:{name}]"),
            DlpAction::Pseudonymise => match pseudonyms.as_deref_mut() {
                Some(pseudonyms) => pseudonyms.of(name, value),
                None => continue,
            },
        };
        out.push_str(&text[copied..finding.range.start]);
        out.push_str(&replacement);
        copied = finding.range.end;
    }
    if let Some(detector) = blocked {
        return Err(HookError::DlpBlocked {
            detector: detector.to_owned(),
            place: place.as_str(),
        });
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// The placeholders of one request: the same value gets the same placeholder.
#[derive(Default)]
struct Pseudonyms {
    by_value: HashMap<String, String>,
    /// How many placeholders each detector has handed out.
    counts: HashMap<String, u32>,
}

impl Pseudonyms {
    fn of(&mut self, detector: &str, value: &str) -> String {
        if let Some(placeholder) = self.by_value.get(value) {
            return placeholder.clone();
        }
        let n = self.counts.entry(detector.to_owned()).or_default();
        *n += 1;
        let placeholder = format!("<{}_{n}>", detector.to_ascii_uppercase());
        self.by_value.insert(value.to_owned(), placeholder.clone());
        placeholder
    }

    fn is_empty(&self) -> bool {
        self.by_value.is_empty()
    }

    fn into_restore(self) -> Restore {
        let longest = self.by_value.values().map(String::len).max().unwrap_or(0);
        Restore {
            values: self
                .by_value
                .into_iter()
                .map(|(value, placeholder)| (placeholder, value))
                .collect(),
            longest,
        }
    }
}

/// Placeholders back to their values, in an answer.
#[derive(Debug, Default)]
struct Restore {
    values: HashMap<String, String>,
    /// The longest placeholder, in bytes.
    longest: usize,
}

impl Restore {
    fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every known placeholder replaced by its value.
    fn apply(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            out.push_str(&rest[..open]);
            let candidate = &rest[open..];
            match candidate
                .find('>')
                .and_then(|close| self.values.get(&candidate[..=close]).map(|v| (close, v)))
            {
                Some((close, value)) => {
                    out.push_str(value);
                    rest = &candidate[close + 1..];
                }
                None => {
                    out.push('<');
                    rest = &candidate[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    /// How much of the end of `text` could be the start of a placeholder cut by a chunk
    /// boundary: from its last `<` with no `>` after it, if short enough to be one.
    fn unsettled_tail(&self, text: &str) -> usize {
        if self.is_empty() {
            return 0;
        }
        match text.rfind('<') {
            Some(open) if !text[open..].contains('>') && text.len() - open < self.longest => {
                text.len() - open
            }
            _ => 0,
        }
    }
}

/// One request's view of its answer.
struct DlpAnswer {
    /// `None`: the route does not scan answers (only restores placeholders).
    scanner: Option<Arc<Scanner>>,
    actions: CallerActions,
    restore: Arc<Restore>,
    /// A stream's open texts: a choice's text, or one of its tool calls' arguments.
    channels: HashMap<Channel, Pending>,
    /// Per choice, the channel its last event wrote to.
    current: HashMap<u32, Channel>,
}

/// Where a stream's text goes: a choice's text (`tool: None`) or a tool call's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Channel {
    choice: u32,
    tool: Option<u32>,
}

impl Channel {
    fn place(self) -> PolicyPlace {
        match self.tool {
            Some(_) => PolicyPlace::ToolCall,
            None => PolicyPlace::Response,
        }
    }

    fn event(self, text: String) -> StreamEvent {
        match self.tool {
            Some(index) => StreamEvent::ToolCallDelta {
                choice: self.choice,
                index,
                arguments: text,
            },
            None => StreamEvent::TextDelta {
                choice: self.choice,
                text,
            },
        }
    }
}

/// A channel's text not yet let out: held by the scanner (it could still complete a match),
/// then by the restorer (it could still complete a placeholder).
struct Pending {
    scan: Option<StreamScanner>,
    unrestored: String,
}

impl DlpAnswer {
    /// Acts on a whole text of the answer and restores its placeholders.
    fn settle_text(
        &self,
        text: &str,
        place: PolicyPlace,
        audit: &mut Audit,
    ) -> Result<String, HookError> {
        let text = match &self.scanner {
            Some(scanner) => {
                let findings = scanner.find(text);
                if findings.is_empty() {
                    text.to_owned()
                } else {
                    rewrite(text, &findings, &self.actions, place, audit, None)
                        .map_err(answer_blocked)?
                }
            }
            None => text.to_owned(),
        };
        Ok(self.restore.apply(&text))
    }

    /// Takes text for a channel; returns what may go out now.
    fn push(
        &mut self,
        channel: Channel,
        text: &str,
        audit: &mut Audit,
    ) -> Result<String, HookError> {
        let scanner = self.scanner.clone();
        let pending = self.channels.entry(channel).or_insert_with(|| Pending {
            scan: scanner.map(StreamScanner::new),
            unrestored: String::new(),
        });
        let scanned = match &mut pending.scan {
            Some(scan) => {
                let released = scan.push(text);
                rewrite(
                    &released.text,
                    &released.findings,
                    &self.actions,
                    channel.place(),
                    audit,
                    None,
                )
                .map_err(answer_blocked)?
            }
            None => text.to_owned(),
        };
        pending.unrestored.push_str(&scanned);
        let keep = self.restore.unsettled_tail(&pending.unrestored);
        let ready = pending.unrestored.len() - keep;
        let out = self.restore.apply(&pending.unrestored[..ready]);
        pending.unrestored.drain(..ready);
        Ok(out)
    }

    /// A channel is done: everything it held goes out.
    fn flush(&mut self, channel: Channel, audit: &mut Audit) -> Result<String, HookError> {
        let Some(mut pending) = self.channels.remove(&channel) else {
            return Ok(String::new());
        };
        if let Some(scan) = &mut pending.scan {
            let released = scan.finish();
            let scanned = rewrite(
                &released.text,
                &released.findings,
                &self.actions,
                channel.place(),
                audit,
                None,
            )
            .map_err(answer_blocked)?;
            pending.unrestored.push_str(&scanned);
        }
        Ok(self.restore.apply(&pending.unrestored))
    }

    /// Flushes the channel a choice wrote to last, if it is not `next`.
    fn switch_to(
        &mut self,
        next: Option<Channel>,
        choice: u32,
        out: &mut Vec<StreamEvent>,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        let last = self.current.get(&choice).copied();
        if last == next {
            return Ok(());
        }
        match next {
            Some(next) => self.current.insert(choice, next),
            None => self.current.remove(&choice),
        };
        if let Some(last) = last {
            let rest = self.flush(last, audit)?;
            if !rest.is_empty() {
                out.push(last.event(rest));
            }
        }
        Ok(())
    }
}

/// A block found in an answer ends it.
fn answer_blocked(error: HookError) -> HookError {
    match error {
        HookError::DlpBlocked { detector, .. } => HookError::OutputBlocked {
            hook: POLICY,
            reason: format!("the answer contained a value the `{detector}` detector blocks"),
        },
        other => other,
    }
}

impl AnswerHook for DlpAnswer {
    fn on_response(
        &mut self,
        response: &mut ChatResponse,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        for choice in &mut response.choices {
            for part in &mut choice.parts {
                match part {
                    Part::Text { text, .. } => {
                        *text = self.settle_text(text, PolicyPlace::Response, audit)?;
                    }
                    Part::ToolCall(call) => {
                        call.arguments =
                            self.settle_text(&call.arguments, PolicyPlace::ToolCall, audit)?;
                    }
                    Part::Image { .. } | Part::ToolResult { .. } => {}
                }
            }
        }
        Ok(())
    }

    fn on_event(
        &mut self,
        event: StreamEvent,
        out: &mut Vec<StreamEvent>,
        audit: &mut Audit,
    ) -> Result<(), HookError> {
        match event {
            StreamEvent::TextDelta { choice, text } => {
                let channel = Channel { choice, tool: None };
                self.switch_to(Some(channel), choice, out, audit)?;
                let ready = self.push(channel, &text, audit)?;
                if !ready.is_empty() {
                    out.push(channel.event(ready));
                }
            }
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => {
                let channel = Channel {
                    choice,
                    tool: Some(index),
                };
                self.switch_to(Some(channel), choice, out, audit)?;
                let ready = self.push(channel, &arguments, audit)?;
                if !ready.is_empty() {
                    out.push(channel.event(ready));
                }
            }
            StreamEvent::ToolCallStart { choice, .. } | StreamEvent::Finish { choice, .. } => {
                // What the choice held belongs before the next call, or its end.
                self.switch_to(None, choice, out, audit)?;
                out.push(event);
            }
            other => out.push(other),
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>, audit: &mut Audit) -> Result<(), HookError> {
        let mut open: Vec<u32> = self.current.keys().copied().collect();
        open.sort_unstable();
        for choice in open {
            self.switch_to(None, choice, out, audit)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
