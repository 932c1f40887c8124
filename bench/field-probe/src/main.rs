//! field-probe: streaming (SSE) measurements for `bench/field.sh`, frame by frame.
//!
//!   field-probe --url URL [-H 'name: value']... --body JSON [-n N] [-c C] [--duration SECS]
//!               [--ramp SECS] [--warmup W] [--stall-ms MS] [--expect-content K]
//!               [--timeout SECS]
//!
//! C workers, each on its own keep-alive HTTP/1.1 connection, send streaming requests one after
//! another until N streams in all have been sent or SECS seconds have passed (a stream under
//! way is read to its end). Worker i starts i*RAMP/C seconds after the first, so C streams are
//! opened over RAMP seconds and then held. W warm-up streams go first, one at a time, and are
//! not counted. Every SSE event (a block ended by a blank line) is timed when the read that
//! completes it returns; per stream:
//!   ttfc      request sent -> first event whose delta carries non-empty `content`
//!   gaps      between consecutive content events (the inter-frame gaps)
//!   intervals request sent -> first `data:` event, then between consecutive `data:` events
//! and each stream is exactly one of
//!   failed    connect or request error, a status other than 200, a body error, or no end
//!             within --timeout (default 30 s)
//!   lost      200, but no `data: [DONE]`, or (with --expect-content) fewer content events
//!             than K
//!   stalled   complete, but one of its intervals exceeded --stall-ms (default 200)
//!   ok        none of the above
//! Prints one JSON object: counts, the peak of streams in flight, and p50/p90/p99/p99.9/max in
//! milliseconds of ttfc, gaps and first-event times (nearest rank over all streams).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

struct Args {
    host: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
    requests: usize,
    concurrency: usize,
    duration: Option<Duration>,
    ramp: Duration,
    warmup: usize,
    stall: Duration,
    expect_content: Option<usize>,
    timeout: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: field-probe --url http://HOST:PORT/PATH [-H 'k: v']... --body JSON [-n N] \
         [-c C] [--duration SECS] [--ramp SECS] [--warmup W] [--stall-ms MS] \
         [--expect-content K] [--timeout SECS]"
    );
    std::process::exit(2)
}

fn secs(v: String) -> Duration {
    Duration::from_secs_f64(v.trim_end_matches('s').parse().unwrap_or_else(|_| usage()))
}

fn parse_args() -> Args {
    let mut url = String::new();
    let mut a = Args {
        host: String::new(),
        path: String::new(),
        headers: Vec::new(),
        body: Bytes::new(),
        requests: usize::MAX,
        concurrency: 1,
        duration: None,
        ramp: Duration::ZERO,
        warmup: 0,
        stall: Duration::from_millis(200),
        expect_content: None,
        timeout: Duration::from_secs(30),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--url" => url = v(),
            "-H" | "--header" => {
                let h = v();
                let (n, val) = h.split_once(':').unwrap_or_else(|| usage());
                a.headers
                    .push((n.trim().to_string(), val.trim().to_string()));
            }
            "--body" | "-d" => a.body = Bytes::from(v()),
            "-n" | "--requests" => a.requests = v().parse().unwrap_or_else(|_| usage()),
            "-c" | "--concurrency" => a.concurrency = v().parse().unwrap_or_else(|_| usage()),
            "--duration" | "-z" => a.duration = Some(secs(v())),
            "--ramp" => a.ramp = secs(v()),
            "--warmup" => a.warmup = v().parse().unwrap_or_else(|_| usage()),
            "--stall-ms" => {
                a.stall =
                    Duration::from_secs_f64(v().parse::<f64>().unwrap_or_else(|_| usage()) / 1e3)
            }
            "--expect-content" => a.expect_content = Some(v().parse().unwrap_or_else(|_| usage())),
            "--timeout" => a.timeout = secs(v()),
            _ => usage(),
        }
    }
    let rest = url.strip_prefix("http://").unwrap_or_else(|| usage());
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    a.host = host.to_string();
    a.path = if path.is_empty() {
        "/".into()
    } else {
        path.to_string()
    };
    if a.host.is_empty() || a.concurrency == 0 || a.body.is_empty() {
        usage()
    }
    if a.requests == usize::MAX && a.duration.is_none() {
        a.requests = 100;
    }
    a
}

/// What one stream saw.
#[derive(Default)]
struct Stream {
    ttfc: Option<f64>,
    first_event: Option<f64>,
    gaps: Vec<f64>,
    max_interval: f64,
    content: usize,
    done: bool,
}

enum Outcome {
    Failed(String),
    Done(Stream),
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// True when the event's delta carries non-empty content: `"content"`, optional spaces, `:`,
/// optional spaces, then a string that is not empty.
fn has_content(ev: &[u8]) -> bool {
    let key = b"\"content\"";
    let mut from = 0;
    while let Some(i) = find(&ev[from..], key) {
        let mut j = from + i + key.len();
        while j < ev.len() && ev[j] == b' ' {
            j += 1;
        }
        if j < ev.len() && ev[j] == b':' {
            j += 1;
            while j < ev.len() && ev[j] == b' ' {
                j += 1;
            }
            if j + 1 < ev.len() && ev[j] == b'"' && ev[j + 1] != b'"' {
                return true;
            }
        }
        from += i + key.len();
    }
    false
}

/// A connection whose driver task belongs to `conns` (dropped with it).
async fn connect(a: &Args, conns: &mut JoinSet<()>) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(&a.host)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    conns.spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn one(sender: &mut SendRequest<Full<Bytes>>, a: &Args) -> Outcome {
    let mut rb = Request::post(a.path.as_str())
        .header("host", a.host.as_str())
        .header("content-type", "application/json")
        .header("accept", "text/event-stream");
    for (k, v) in &a.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    let req = match rb.body(Full::new(a.body.clone())) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if let Err(e) = sender.ready().await {
        return Outcome::Failed(format!("connection: {e}"));
    }
    let t0 = Instant::now();
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(format!("request: {e}")),
    };
    if resp.status() != 200 {
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        return Outcome::Failed(format!("status {status}"));
    }
    let mut body = resp.into_body();
    let mut s = Stream::default();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut last_event = t0;
    let mut last_content: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => return Outcome::Failed(format!("body: {e}")),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let now = Instant::now();
        buf.extend(data.iter().copied().filter(|&b| b != b'\r'));
        while let Some(end) = find(&buf, b"\n\n") {
            let ev: Vec<u8> = buf.drain(..end + 2).collect();
            if find(&ev, b"data:").is_none() {
                continue; // a comment or keep-alive: not a frame
            }
            let since = ms(now - last_event);
            s.max_interval = s.max_interval.max(since);
            last_event = now;
            if s.first_event.is_none() {
                s.first_event = Some(ms(now - t0));
            }
            if find(&ev, b"[DONE]").is_some() {
                s.done = true;
            } else if has_content(&ev) {
                s.content += 1;
                if s.ttfc.is_none() {
                    s.ttfc = Some(ms(now - t0));
                }
                if let Some(prev) = last_content {
                    s.gaps.push(ms(now - prev));
                }
                last_content = Some(now);
            }
        }
    }
    Outcome::Done(s)
}

#[derive(Default)]
struct Tally {
    streams: usize,
    ok: usize,
    failed: usize,
    lost: usize,
    stalled: usize,
    errors: Vec<String>,
    ttfc: Vec<f64>,
    first_event: Vec<f64>,
    gaps: Vec<f64>,
    max_interval: f64,
    content_min: Option<usize>,
    content_max: usize,
}

impl Tally {
    fn add(&mut self, o: Outcome, a: &Args) {
        self.streams += 1;
        match o {
            Outcome::Failed(e) => {
                self.failed += 1;
                if self.errors.len() < 5 && !self.errors.contains(&e) {
                    self.errors.push(e);
                }
            }
            Outcome::Done(s) => {
                self.content_min = Some(self.content_min.map_or(s.content, |m| m.min(s.content)));
                self.content_max = self.content_max.max(s.content);
                self.max_interval = self.max_interval.max(s.max_interval);
                self.ttfc.extend(s.ttfc);
                self.first_event.extend(s.first_event);
                self.gaps.extend_from_slice(&s.gaps);
                if !s.done || a.expect_content.is_some_and(|k| s.content < k) {
                    self.lost += 1;
                } else if s.max_interval > ms(a.stall) {
                    self.stalled += 1;
                } else {
                    self.ok += 1;
                }
            }
        }
    }
}

fn stats(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return r#"{"n":0}"#.to_string();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let pct =
        |p: f64| v[(((p / 100.0) * (v.len() as f64 - 1.0)).round() as usize).min(v.len() - 1)];
    format!(
        r#"{{"n":{},"p50":{:.3},"p90":{:.3},"p99":{:.3},"p999":{:.3},"max":{:.3}}}"#,
        v.len(),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        v[v.len() - 1]
    )
}

async fn worker(
    i: usize,
    a: Arc<Args>,
    started: Instant,
    sent: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> Tally {
    let mut t = Tally::default();
    let delay = a.ramp.mul_f64(i as f64 / a.concurrency as f64);
    tokio::time::sleep_until((started + delay).into()).await;
    let mut conns = JoinSet::new();
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        if a.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if sent.fetch_add(1, Ordering::Relaxed) >= a.requests {
            break;
        }
        let n = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        peak.fetch_max(n, Ordering::Relaxed);
        let outcome = tokio::time::timeout(a.timeout, async {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                conn = Some(connect(&a, &mut conns).await?);
            }
            Ok::<_, String>(one(conn.as_mut().unwrap(), &a).await)
        })
        .await;
        in_flight.fetch_sub(1, Ordering::Relaxed);
        let outcome = match outcome {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(format!("no end within {:?}", a.timeout)),
        };
        if matches!(outcome, Outcome::Failed(_)) {
            conn = None; // start the next stream on a fresh connection
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        t.add(outcome, &a);
    }
    t
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let a = Arc::new(parse_args());
    if a.warmup > 0 {
        let mut conns = JoinSet::new();
        let mut c = connect(&a, &mut conns).await.ok();
        for _ in 0..a.warmup {
            if let Some(s) = c.as_mut() {
                let _ = tokio::time::timeout(a.timeout, one(s, &a)).await;
            }
        }
    }
    let (sent, in_flight, peak) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for i in 0..a.concurrency {
        let (a, s, f, p) = (a.clone(), sent.clone(), in_flight.clone(), peak.clone());
        workers.spawn(worker(i, a, started, s, f, p));
    }
    let mut all = Tally::default();
    while let Some(t) = workers.join_next().await {
        let t = t.expect("worker");
        all.streams += t.streams;
        all.ok += t.ok;
        all.failed += t.failed;
        all.lost += t.lost;
        all.stalled += t.stalled;
        for e in t.errors {
            if all.errors.len() < 5 && !all.errors.contains(&e) {
                all.errors.push(e);
            }
        }
        all.ttfc.extend(t.ttfc);
        all.first_event.extend(t.first_event);
        all.gaps.extend(t.gaps);
        all.max_interval = all.max_interval.max(t.max_interval);
        if let Some(m) = t.content_min {
            all.content_min = Some(all.content_min.map_or(m, |x| x.min(m)));
        }
        all.content_max = all.content_max.max(t.content_max);
    }
    let wall = started.elapsed().as_secs_f64();
    let errors: Vec<String> = all
        .errors
        .iter()
        .map(|e| format!("\"{}\"", e.replace(['"', '\\'], "'")))
        .collect();
    println!(
        concat!(
            r#"{{"concurrency":{},"streams":{},"ok":{},"failed":{},"lost":{},"stalled":{},"#,
            r#""errors":[{}],"peak_in_flight":{},"wall_s":{:.3},"stall_ms":{},"#,
            r#""expect_content":{},"content_frames":{{"min":{},"max":{}}},"max_interval_ms":{:.3},"#,
            r#""ttfc_ms":{},"gap_ms":{},"first_event_ms":{}}}"#
        ),
        a.concurrency,
        all.streams,
        all.ok,
        all.failed,
        all.lost,
        all.stalled,
        errors.join(","),
        peak.load(Ordering::Relaxed),
        wall,
        ms(a.stall),
        a.expect_content.map_or("null".into(), |k| k.to_string()),
        all.content_min.map_or("null".into(), |k| k.to_string()),
        all.content_max,
        all.max_interval,
        stats(all.ttfc),
        stats(all.gaps),
        stats(all.first_event),
    );
}
