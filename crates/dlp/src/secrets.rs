//! Secrets in free text: what an upstream error message, a log line or a prompt might carry
//! that must not travel further.
//!
//! One regex, one alternative per [`SecretKind`], matched leftmost-first in the order of
//! [`SecretKind::ALL`] (so a database URL with a password is one `database_url`, not a
//! `credential_url` inside it). Patterns stop at `"`, `'`, `\` and whitespace, so redacting
//! inside a JSON string (an SSE event passed through as received) leaves valid JSON.
//!
//! Detection favours recall on shapes that are unambiguous (a key prefix and enough entropy
//! characters) and never guesses on bare high-entropy strings: a false positive would garble
//! an error message a client needs to fix its request.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// What a match is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// `-----BEGIN ... PRIVATE KEY-----` blocks (PEM, OpenSSH).
    PrivateKey,
    /// A database or queue URL (`postgres://`, `mysql://`, `redis://`, `mongodb://`, ...): it
    /// names an internal host and usually carries a password.
    DatabaseUrl,
    /// Any other URL with a user and password: `scheme://user:pass@host`.
    CredentialUrl,
    /// OpenAI (`sk-`, `sk-proj-`), Anthropic (`sk-ant-`) and Sluice (`sk-sluice-`) keys.
    ProviderKey,
    /// AWS access key ids (`AKIA...`, `ASIA...`).
    AwsAccessKey,
    /// GitHub tokens (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`, `github_pat_`).
    GithubToken,
    /// Slack tokens (`xoxb-`, `xoxa-`, `xoxp-`, `xoxs-`, `xoxr-`).
    SlackToken,
    /// JSON Web Tokens (three base64url parts, the first two starting `eyJ`).
    Jwt,
    /// `Bearer <token>` as in an echoed `Authorization` header.
    BearerToken,
}

impl SecretKind {
    /// Every kind, in the order the alternatives are tried.
    pub const ALL: [SecretKind; 9] = [
        SecretKind::PrivateKey,
        SecretKind::DatabaseUrl,
        SecretKind::CredentialUrl,
        SecretKind::ProviderKey,
        SecretKind::AwsAccessKey,
        SecretKind::GithubToken,
        SecretKind::SlackToken,
        SecretKind::Jwt,
        SecretKind::BearerToken,
    ];

    /// Stable snake_case name, for audit records and the redaction marker.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::PrivateKey => "private_key",
            SecretKind::DatabaseUrl => "database_url",
            SecretKind::CredentialUrl => "credential_url",
            SecretKind::ProviderKey => "provider_key",
            SecretKind::AwsAccessKey => "aws_access_key",
            SecretKind::GithubToken => "github_token",
            SecretKind::SlackToken => "slack_token",
            SecretKind::Jwt => "jwt",
            SecretKind::BearerToken => "bearer_token",
        }
    }

    /// The pattern of one kind. None may match `"`, `'`, `\` or whitespace outside what the
    /// kind itself is made of (see the module comment).
    fn pattern(self) -> &'static str {
        match self {
            // A whole block; or, cut short (an error message truncated), up to the end of its
            // base64 body.
            SecretKind::PrivateKey => {
                r#"-----BEGIN[A-Z ]*PRIVATE KEY-----(?:[^"-]*-----END[A-Z ]*PRIVATE KEY-----|[A-Za-z0-9+/=\\ ]*)"#
            }
            SecretKind::DatabaseUrl => {
                r#"\b(?:postgres(?:ql)?|mysql|mariadb|redis|rediss|mongodb(?:\+srv)?|amqps?|mssql|sqlserver|clickhouse|cockroachdb|jdbc:[a-z]+)://[^\s"'\\<>]*[^\s"'\\<>.,;:!?)\]]"#
            }
            SecretKind::CredentialUrl => {
                r#"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@"'\\<>]+:[^\s/@"'\\<>]+@[^\s"'\\<>]*[^\s"'\\<>.,;:!?)\]]"#
            }
            SecretKind::ProviderKey => r"\bsk-[A-Za-z0-9_-]{16,}",
            SecretKind::AwsAccessKey => r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            SecretKind::GithubToken => {
                r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"
            }
            SecretKind::SlackToken => r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
            SecretKind::Jwt => r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+",
            SecretKind::BearerToken => r"\b[Bb](?:earer|EARER)\s+[A-Za-z0-9._~+/-]{16,}=*",
        }
    }
}

/// One secret found: its kind and its byte range in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: SecretKind,
    pub range: Range<usize>,
}

#[expect(
    clippy::expect_used,
    reason = "the patterns are constants; `every_pattern_compiles_on_its_own` and every other test build them"
)]
pub(crate) static DETECTOR: LazyLock<Regex> = LazyLock::new(|| {
    let alternatives: Vec<String> = SecretKind::ALL
        .iter()
        .map(|kind| format!("({})", kind.pattern()))
        .collect();
    Regex::new(&alternatives.join("|")).expect("the secret patterns compile")
});

/// Every secret in `text`, in order, without overlaps.
pub fn find(text: &str) -> Vec<Finding> {
    DETECTOR
        .captures_iter(text)
        .filter_map(|captures| {
            let whole = captures.get(0)?;
            Some(Finding {
                kind: kind_of(&captures)?,
                range: whole.range(),
            })
        })
        .collect()
}

/// The kind whose alternative of [`DETECTOR`] matched.
pub(crate) fn kind_of(captures: &regex::Captures<'_>) -> Option<SecretKind> {
    SecretKind::ALL
        .iter()
        .enumerate()
        .find_map(|(index, kind)| captures.get(index + 1).map(|_| *kind))
}

/// Whether `text` holds any secret.
pub fn contains(text: &str) -> bool {
    DETECTOR.is_match(text)
}

/// `text` with every secret replaced by `[redacted KIND]`; borrowed when there was none.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !DETECTOR.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for finding in find(text) {
        out.push_str(&text[last..finding.range.start]);
        out.push_str("[redacted ");
        out.push_str(finding.kind.as_str());
        out.push(']');
        last = finding.range.end;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<SecretKind> {
        find(text).into_iter().map(|f| f.kind).collect()
    }

    #[test]
    fn every_pattern_compiles_on_its_own() {
        for kind in SecretKind::ALL {
            assert!(Regex::new(kind.pattern()).is_ok(), "{kind:?}");
        }
        assert!(!contains("plain text"));
    }

    #[test]
    fn finds_each_kind_of_secret() {
        let cases = [
            (
                "Incorrect API key provided: sk-proj-abcDEF1234567890xyzXYZ_-abc.",
                SecretKind::ProviderKey,
            ),
            (
                "key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789 is invalid",
                SecretKind::ProviderKey,
            ),
            (
                "client key sk-sluice-0123456789abcdef0123",
                SecretKind::ProviderKey,
            ),
            ("aws AKIAIOSFODNN7EXAMPLE used", SecretKind::AwsAccessKey),
            (
                "token ghp_0123456789abcdefghijABCDEFGHIJ012345 leaked",
                SecretKind::GithubToken,
            ),
            (
                "pat github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
                SecretKind::GithubToken,
            ),
            (
                "slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
                SecretKind::SlackToken,
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                SecretKind::Jwt,
            ),
            (
                "fetch https://admin:hunter2@internal.example.com/v1 failed",
                SecretKind::CredentialUrl,
            ),
            (
                "db postgres://app:s3cret@db.internal:5432/prod is down",
                SecretKind::DatabaseUrl,
            ),
            (
                "cache redis://cache.internal:6379/0 refused",
                SecretKind::DatabaseUrl,
            ),
            ("mysql://root@10.0.0.5/app", SecretKind::DatabaseUrl),
            (
                "Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345",
                SecretKind::BearerToken,
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
                SecretKind::PrivateKey,
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEA",
                SecretKind::PrivateKey,
            ),
        ];
        for (text, kind) in cases {
            assert_eq!(kinds(text), [kind], "{text}");
        }
    }

    #[test]
    fn leaves_ordinary_error_messages_alone() {
        for text in [
            "Invalid value for 'temperature': expected a number between 0 and 2",
            "This model's maximum context length is 8192 tokens. However, you requested 9000",
            "messages.0.content: Input should be a valid string",
            "see https://platform.openai.com/docs/guides/error-codes for details",
            "the task-1234567890 failed",
            "Bearer token missing",
        ] {
            assert_eq!(redact(text), text, "{text}");
        }
    }

    #[test]
    fn redaction_names_the_kind_and_keeps_the_rest() {
        let text = "Incorrect API key provided: sk-proj-abcDEF1234567890xyz. Database postgres://u:p@db:5432/x, \
                    then (https://u:p@h.example/a).";
        assert_eq!(
            redact(text),
            "Incorrect API key provided: [redacted provider_key]. Database [redacted database_url], \
             then ([redacted credential_url])."
        );
    }

    #[test]
    fn redacting_inside_json_keeps_it_valid() {
        let event = r#"data: {"error":{"message":"bad key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUv for https://u:pw@proxy.internal/x, -----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----","type":"invalid_request_error"}}"#;
        let redacted = redact(event);
        let json = redacted.strip_prefix("data: ").unwrap();
        let value: serde_json_free::Value = serde_json_free::parse(json);
        assert!(value.0.contains("[redacted provider_key]"), "{redacted}");
        assert!(value.0.contains("[redacted credential_url]"), "{redacted}");
        assert!(value.0.contains("[redacted private_key]"), "{redacted}");
        assert!(
            !redacted.contains("AbCdEf") && !redacted.contains("pw@"),
            "{redacted}"
        );
    }

    /// A minimal check that a JSON object is still well formed (the crate has no JSON
    /// dependency): quotes balance, every backslash escapes something, braces match.
    mod serde_json_free {
        pub struct Value(pub String);

        pub fn parse(json: &str) -> Value {
            let mut depth = 0i32;
            let mut in_string = false;
            let mut chars = json.chars();
            while let Some(c) = chars.next() {
                match (in_string, c) {
                    (true, '\\') => {
                        let escaped = chars.next().expect("dangling backslash");
                        assert!("\"\\/bfnrtu".contains(escaped), "bad escape \\{escaped}");
                    }
                    (true, '"') => in_string = false,
                    (false, '"') => in_string = true,
                    (false, '{') => depth += 1,
                    (false, '}') => depth -= 1,
                    _ => {}
                }
                assert!(depth >= 0, "unbalanced braces in {json}");
            }
            assert!(!in_string && depth == 0, "not well formed: {json}");
            Value(json.to_owned())
        }
    }
}
