//! Plain-text tables for the CLI: columns as wide as their widest cell, two spaces apart.

use std::io::Write;

/// Writes `lines` (the header first) as aligned columns; `right_aligned(column)` says which
/// columns hold numbers. Trailing spaces are trimmed.
pub(crate) fn write(
    out: &mut impl Write,
    lines: &[Vec<String>],
    right_aligned: impl Fn(usize) -> bool,
) -> std::io::Result<()> {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .map(|l| l.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in lines {
        let mut text = String::new();
        for (c, cell) in line.iter().enumerate() {
            let w = widths.get(c).copied().unwrap_or(0);
            if right_aligned(c) {
                text.push_str(&format!("{cell:>w$}  "));
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())?;
    }
    Ok(())
}
