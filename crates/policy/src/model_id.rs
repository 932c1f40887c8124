//! How a model id reported by a provider is matched to a table entry.
//!
//! Providers report dated snapshots (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`,
//! `gpt-3.5-turbo-0125`, Vertex's `claude-sonnet-4-5@20250929`) or moving aliases
//! (`claude-3-5-haiku-latest`). A table lists the model (`gpt-4o`), and exact snapshots only
//! where their price differs. The candidates for an id are the id itself, then the id without
//! a version stamp, longest first. Only a version stamp is ever removed: `o3-pro` or
//! `gpt-4o-mini` never fall back to `o3` or `gpt-4o`, which are different models at different
//! prices. Used by [`crate::pricing`], [`crate::energy`] and model-filtered limits.

/// The lowercase id, then its stems without a version stamp, longest first.
pub(crate) fn candidates(model: &str) -> impl Iterator<Item = String> {
    let model = model.trim().to_ascii_lowercase();
    let mut stems: Vec<String> = Vec::with_capacity(3);
    for separator in ['-', '@'] {
        let Some((stem, stamp)) = model.rsplit_once(separator) else {
            continue;
        };
        // `-2024-08-06`: the split is at the last `-`, so look at the last three parts.
        if separator == '-'
            && let Some(dated_stem) = strip_dashed_date(&model)
        {
            stems.push(dated_stem.to_owned());
        }
        if !stem.is_empty() && is_version_stamp(stamp) {
            stems.push(stem.to_owned());
        }
    }
    stems.sort_by_key(|stem| std::cmp::Reverse(stem.len()));
    stems.dedup();
    std::iter::once(model).chain(stems)
}

/// `20250929` (YYYYMMDD), `0125` (MMDD, OpenAI's older snapshots) or `latest`.
fn is_version_stamp(stamp: &str) -> bool {
    stamp == "latest"
        || ((stamp.len() == 8 || stamp.len() == 4) && stamp.bytes().all(|b| b.is_ascii_digit()))
}

/// The stem of `name-YYYY-MM-DD`, if the id ends that way.
fn strip_dashed_date(model: &str) -> Option<&str> {
    let bytes = model.as_bytes();
    let length = bytes.len();
    if length < 12 {
        return None;
    }
    let stamp = &bytes[length - 11..];
    let shape_matches = stamp.iter().enumerate().all(|(index, byte)| match index {
        0 | 5 | 8 => *byte == b'-',
        _ => byte.is_ascii_digit(),
    });
    shape_matches.then(|| &model[..length - 11])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(model: &str) -> Vec<String> {
        candidates(model).collect()
    }

    #[test]
    fn strips_dated_suffixes_only() {
        assert_eq!(all("gpt-4o-2024-08-06"), ["gpt-4o-2024-08-06", "gpt-4o"]);
        assert_eq!(
            all("claude-sonnet-4-5-20250929"),
            ["claude-sonnet-4-5-20250929", "claude-sonnet-4-5"]
        );
        assert_eq!(
            all("gpt-3.5-turbo-0125"),
            ["gpt-3.5-turbo-0125", "gpt-3.5-turbo"]
        );
        assert_eq!(
            all("claude-3-5-haiku-latest"),
            ["claude-3-5-haiku-latest", "claude-3-5-haiku"]
        );
        assert_eq!(
            all("claude-sonnet-4-5@20250929"),
            ["claude-sonnet-4-5@20250929", "claude-sonnet-4-5"]
        );
    }

    #[test]
    fn never_falls_back_to_a_different_model() {
        assert_eq!(all("o3-pro"), ["o3-pro"]);
        assert_eq!(all("gpt-4o-mini"), ["gpt-4o-mini"]);
        assert_eq!(all("claude-opus-4-1"), ["claude-opus-4-1"]);
        // The `-1-20250805` tail is a minor version and a date: only the date goes.
        assert_eq!(
            all("claude-opus-4-1-20250805"),
            ["claude-opus-4-1-20250805", "claude-opus-4-1"]
        );
    }

    #[test]
    fn lowercases_and_trims() {
        assert_eq!(all(" GPT-4o "), ["gpt-4o"]);
    }
}
