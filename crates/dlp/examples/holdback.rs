//! How long a stream scanner holds text back, and what scanning costs, on an answer streamed
//! as a model streams it (a few bytes per chunk).
//!
//! ```text
//! cargo run --release -p sluice-dlp --example holdback [-- CHUNK_BYTES [DETECTOR,...]]
//! ```
//!
//! Every built-in detector runs unless a comma-separated list names some.
//!
//! Prints, over every byte of a ~16 KB answer of prose with a sensitive value every few
//! sentences: the share of bytes let out with the chunk they came in, the delay of the others
//! in chunks (p50, p99, max) and the scanner's time per chunk and per KB of whole text.

#![expect(
    clippy::unwrap_used,
    reason = "a measuring tool: a failure should stop it"
)]

use std::sync::Arc;
use std::time::Instant;

use sluice_dlp::{Detector, Scanner, StreamScanner};

fn answer() -> String {
    let prose = [
        "The migration plan moves the billing service in three steps over two weeks.",
        "Each step is reversible, and the dashboards show latency, errors and spend.",
        "Questions go to the platform team, who answer within a working day.",
    ];
    let values = [
        "Contact jane.doe@example.com for access.",
        "The test card 4111 1111 1111 1111 is declined on purpose.",
        "Call +44 20 7946 0958 after 10:00.",
        "Wire it to GB82 WEST 1234 5698 7654 32 by Friday.",
        "The host 192.0.2.17 serves the staging copy.",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 16 * 1024 {
        text.push_str(prose[i % prose.len()]);
        text.push(' ');
        if i % 3 == 2 {
            text.push_str(values[(i / 3) % values.len()]);
            text.push(' ');
        }
        i += 1;
    }
    text
}

fn percentile(sorted: &[usize], p: f64) -> usize {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn main() {
    let chunk_bytes: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(4);
    let detectors: Vec<Detector> = match std::env::args().nth(2) {
        Some(names) => names.split(',').map(|n| n.parse().unwrap()).collect(),
        None => Detector::ALL.to_vec(),
    };
    let scanner = Arc::new(Scanner::new(&detectors, Vec::new()).unwrap());
    let text = answer();
    let chunks: Vec<&str> = {
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let mut end = (start + chunk_bytes).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            chunks.push(&text[start..end]);
            start = end;
        }
        chunks
    };

    // Delay of each byte: the chunk it went out with minus the chunk it came in.
    let mut arrived_in = Vec::with_capacity(text.len());
    let mut delays = Vec::with_capacity(text.len());
    let mut stream = StreamScanner::new(scanner.clone());
    let mut findings = 0;
    let started = Instant::now();
    for (i, chunk) in chunks.iter().enumerate() {
        arrived_in.extend(std::iter::repeat_n(i, chunk.len()));
        let released = stream.push(chunk);
        findings += released.findings.len();
        for _ in 0..released.text.len() {
            delays.push(i - arrived_in[delays.len()]);
        }
    }
    let released = stream.finish();
    findings += released.findings.len();
    let streamed = started.elapsed();
    let last = chunks.len() - 1;
    for _ in 0..released.text.len() {
        delays.push(last - arrived_in[delays.len()]);
    }
    assert_eq!(delays.len(), text.len());

    let started = Instant::now();
    let rounds = 50;
    let mut whole = 0;
    for _ in 0..rounds {
        whole += scanner.find(&text).len();
    }
    let per_kb = started.elapsed().as_secs_f64() / f64::from(rounds) / (text.len() as f64 / 1024.0);
    assert_eq!(
        whole / rounds as usize,
        findings,
        "streamed and whole scans agree"
    );

    let at_once = delays.iter().filter(|d| **d == 0).count();
    let mut held: Vec<usize> = delays.iter().copied().filter(|d| *d > 0).collect();
    held.sort_unstable();
    println!(
        "{} detectors; answer {} bytes in {} chunks of {chunk_bytes} bytes, {findings} findings",
        detectors.len(),
        text.len(),
        chunks.len()
    );
    println!(
        "bytes out with their own chunk: {:.1}%",
        100.0 * at_once as f64 / text.len() as f64
    );
    if !held.is_empty() {
        println!(
            "held bytes: delay in chunks p50 {} p99 {} max {}",
            percentile(&held, 0.5),
            percentile(&held, 0.99),
            held[held.len() - 1]
        );
    }
    println!(
        "scanner time per chunk {:.2} µs; whole-text scan {:.1} µs per KB",
        streamed.as_secs_f64() * 1e6 / chunks.len() as f64,
        per_kb * 1e6
    );
}
