//! Two `sluice serve` replicas sharing one Postgres store and one Redis: a key or a budget
//! changed anywhere applies on both within a second (announced with NOTIFY, with the budgets'
//! reread timer set to an hour), a configuration file they share reloads under load without a
//! failed request or a cut stream, and killing one replica mid-load leaves the other serving
//! every request sent to it.
//!
//! Needs a real Postgres and Redis: `SLUICE_TEST_POSTGRES_URL` and `SLUICE_TEST_REDIS_URL`
//! (.ci/run sets both). Each test runs in a Postgres schema and under a Redis key
//! prefix of its own, against the in-process mock provider. The tests of this binary run one
//! at a time, so their one-second deadlines measure the announcements rather than four pairs
//! of replicas competing for the machine's cores.
#![allow(
    clippy::disallowed_methods,
    clippy::panic,
    reason = "tests spawn the tasks they own and fail loudly"
)]
#![expect(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sluice_store::{BudgetRow, NewKey, RequestRecord, StoreLocation, Stores};
use sluice_testkit::MockUpstream;

const ADMIN_TOKEN: &str = "postgres-replicas-admin-token-0123456789";

/// What the product promises: a change reaches every replica within a second.
const WITHIN: Duration = Duration::from_secs(1);

/// How long a test keeps asking before it reports what it saw (past [`WITHIN`], so that a
/// late change is reported with its delay rather than as a timeout).
const GIVE_UP: Duration = Duration::from_secs(3);

/// One test at a time (see the module's note).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Services {
    postgres: String,
    redis: String,
}

fn services() -> Option<Services> {
    match (
        std::env::var("SLUICE_TEST_POSTGRES_URL"),
        std::env::var("SLUICE_TEST_REDIS_URL"),
    ) {
        (Ok(postgres), Ok(redis)) => Some(Services { postgres, redis }),
        _ => {
            eprintln!(
                "skipped: set SLUICE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test and \
                 SLUICE_TEST_REDIS_URL=redis://127.0.0.1:6379 to run it"
            );
            None
        }
    }
}

/// A `sluice serve` process; killed when its fleet is dropped unless stopped before.
struct Replica {
    child: Option<Child>,
    url: String,
    log: PathBuf,
}

impl Replica {
    fn pid(&self) -> String {
        self.child.as_ref().unwrap().id().to_string()
    }
}

/// Replicas on one configuration file (a folder of their own), one Postgres schema, one Redis
/// prefix and one mock provider.
struct Fleet {
    replicas: Vec<Replica>,
    dir: PathBuf,
    mock: MockUpstream,
    store_url: String,
    redis: String,
    redis_prefix: String,
    client: reqwest::Client,
    /// Dropped after the replicas are gone (the struct's own `Drop` runs first).
    _schema: common::PostgresSchema,
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

/// A failed assertion leaves no replica running, and the folder with their logs.
impl Drop for Fleet {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            if let Some(child) = &mut replica.child {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One answer, as much of it as the tests look at.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `x-sluice-deployment`: the deployment that served it.
    deployment: Option<String>,
    /// `x-ratelimit-limit-requests`: the request limit in force for the caller.
    request_limit: Option<String>,
    body: Value,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (deployment, request_limit) = (
            header("x-sluice-deployment"),
            header("x-ratelimit-limit-requests"),
        );
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            deployment,
            request_limit,
            body,
        }
    }

    fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

/// What sends chat requests to the replicas with one key: cheap to clone into a client task.
#[derive(Clone)]
struct Caller {
    client: reqwest::Client,
    urls: Vec<String>,
    key: String,
}

impl Caller {
    fn request(&self, replica: usize, content: &str, stream: bool) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/chat/completions", self.urls[replica]))
            .bearer_auth(&self.key)
            .json(&json!({"model": "m", "stream": stream, "max_tokens": 64,
                          "messages": [{"role": "user", "content": content}]}))
    }

    async fn chat(&self, replica: usize) -> Answer {
        let response = self.request(replica, "hello", false).send().await.unwrap();
        Answer::of(response).await
    }
}

impl Fleet {
    /// A fresh schema (migrated), Redis prefix and configuration file with `m` on deployment
    /// `a`; no replica yet.
    async fn new(name: &str, services: &Services) -> Fleet {
        let one_at_a_time = ONE_AT_A_TIME.lock().await;
        // The build's TLS backend is chosen at run time; plain HTTP still needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let schema = common::PostgresSchema::create(&services.postgres);
        let dir =
            std::env::temp_dir().join(format!("sluice-pg-replicas-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let fleet = Fleet {
            replicas: Vec::new(),
            dir,
            mock: MockUpstream::openai().start().await,
            store_url: schema.url(),
            redis: services.redis.clone(),
            redis_prefix: format!("{{sluice-test-pg-{name}-{nanos}}}:"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _schema: schema,
            _one_at_a_time: one_at_a_time,
        };
        fleet.write_config("a");
        fleet.store().await.close().await;
        fleet
    }

    /// The shared configuration with alias `m` on deployment `target`: `a` is gpt-4o-mini, `b`
    /// gpt-4o, both on the mock. Budget rows are reread hourly: within a test, only an
    /// announcement brings a change made elsewhere. Redis may take 2 s rather than 250 ms to
    /// answer: these tests are not about its latency on a machine busy with other builds.
    fn config(&self, target: &str) -> String {
        format!(
            r#"
[store]
url = "{store}"

[admin]
token_env = "SLUICE_TEST_ADMIN_TOKEN"

[budgets]
counters = "redis"
redis_url = "{redis}"
redis_prefix = "{prefix}"
redis_timeout_ms = 2000
reload_ms = 3600000

[providers.mock]
type = "openai_compatible"
base_url = "{mock}/v1"

[deployments.a]
provider = "mock"
model = "gpt-4o-mini"

[deployments.b]
provider = "mock"
model = "gpt-4o"

[aliases.m]
deployments = ["{target}"]
"#,
            store = self.store_url,
            redis = self.redis,
            prefix = self.redis_prefix,
            mock = self.mock.base_url(),
        )
    }

    /// Replaces the file as a deploy tool should (write beside, rename over); returns the
    /// new content's SHA-256.
    fn write_config(&self, target: &str) -> String {
        let text = self.config(target);
        let beside = self.dir.join("sluice.toml.new");
        std::fs::write(&beside, &text).unwrap();
        std::fs::rename(&beside, self.dir.join("sluice.toml")).unwrap();
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Starts `count` replicas on the file, one after the other, each with a record journal
    /// of its own.
    fn start_replicas(&mut self, count: usize) {
        for _ in 0..count {
            let n = self.replicas.len();
            let log = self.dir.join(format!("replica-{n}.log"));
            let journal = format!("journal-{n}");
            let (child, line) = common::first_line_logging_to(
                Command::new(env!("CARGO_BIN_EXE_sluice"))
                    .current_dir(&self.dir)
                    .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
                    .args(["serve", "--listen", "127.0.0.1:0", "--journal", &journal]),
                Stdio::from(std::fs::File::create(&log).unwrap()),
            );
            assert!(
                line.contains("http://"),
                "the replica did not start: {line:?}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            self.replicas.push(Replica {
                child: Some(child),
                url: common::announced_url(&line),
                log,
            });
        }
    }

    /// The store the replicas share, opened by the test.
    async fn store(&self) -> Stores {
        Stores::open(&StoreLocation::Postgres(self.store_url.clone()))
            .await
            .unwrap()
    }

    /// A key of team `qa`, created by the test in the shared store; its id and secret.
    async fn create_key(&self, name: &str) -> (String, String) {
        let store = self.store().await;
        let created = store
            .keys
            .create_key(NewKey {
                name: name.into(),
                team: Some("qa".into()),
                ..NewKey::default()
            })
            .await
            .unwrap();
        store.close().await;
        (created.info.id, created.secret)
    }

    fn caller(&self, key: &str) -> Caller {
        Caller {
            client: self.client.clone(),
            urls: self.replicas.iter().map(|r| r.url.clone()).collect(),
            key: key.to_owned(),
        }
    }

    /// `sluice ARGS` with the fleet's configuration, which must succeed; its stdout.
    fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .current_dir(&self.dir)
            .env("SLUICE_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "sluice {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    fn admin(
        &self,
        method: reqwest::Method,
        replica: usize,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(
                method,
                format!("{}/admin/v1{path}", self.replicas[replica].url),
            )
            .bearer_auth(ADMIN_TOKEN)
    }

    /// `/admin/v1/config` of a replica: the configuration in force.
    async fn active_config(&self, replica: usize) -> Value {
        let response = self
            .admin(reqwest::Method::GET, replica, "/config")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    fn sighup(&self, replica: usize) {
        let pid = self.replicas[replica].pid();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    }

    /// Every replica's log, for a failure's message.
    fn logs(&self) -> String {
        self.replicas
            .iter()
            .map(|r| {
                let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                format!("--- {} ---\n{log}", r.log.display())
            })
            .collect()
    }

    /// SIGTERM to every replica still running (each drains its record queue), then every
    /// request record in the store.
    async fn stop_and_read_records(&mut self) -> Vec<RequestRecord> {
        for replica in &mut self.replicas {
            if let Some(child) = replica.child.take() {
                common::stop(child);
            }
        }
        let store = self.store().await;
        let records = store.queries.latest_records(10_000).await.unwrap();
        store.close().await;
        records
    }
}

fn count(records: &[RequestRecord], status: u16) -> usize {
    records.iter().filter(|r| r.status == status).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_works_on_both_at_once_and_its_revocation_reaches_both_within_a_second() {
    let Some(services) = services() else { return };
    let mut fleet = Fleet::new("keys", &services).await;
    fleet.start_replicas(2);

    // Made by another process while both run: unknown keys are not cached, so it works on
    // each at once, which then caches it (for 5 s: only the announcement can undo that).
    let created: Value = serde_json::from_str(
        &fleet.cli(&["keys", "create", "--name", "cli", "--team", "qa", "--json"]),
    )
    .unwrap();
    let key_id = created["id"].as_str().unwrap().to_owned();
    let caller = fleet.caller(created["secret"].as_str().unwrap());
    let mut served = 0;
    for replica in [1, 0, 1, 0] {
        let answer = caller.chat(replica).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.deployment.as_deref(), Some("a"));
        served += 1;
    }

    let revoked = fleet.cli(&["keys", "revoke", &key_id]);
    assert!(
        revoked.starts_with(&format!("revoked {key_id}")),
        "{revoked}"
    );
    let since = Instant::now();
    let mut refused_after: [Option<Duration>; 2] = [None, None];
    while refused_after.contains(&None) && since.elapsed() < GIVE_UP {
        for (replica, refused) in refused_after.iter_mut().enumerate() {
            if refused.is_some() {
                continue;
            }
            let answer = caller.chat(replica).await;
            match answer.status {
                200 => served += 1,
                401 => {
                    assert!(answer.error_message().contains("revoked"), "{answer:?}");
                    *refused = Some(since.elapsed());
                }
                _ => panic!("{answer:?}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (replica, refused) in refused_after.iter().enumerate() {
        assert!(
            refused.is_some_and(|after| after < WITHIN),
            "replica {replica} refused the revoked key after {refused:?}\n{}",
            fleet.logs()
        );
    }
    eprintln!("the revocation reached the replicas after {refused_after:?}");
    // And from then on, every time.
    for replica in [0, 1] {
        assert_eq!(caller.chat(replica).await.status, 401);
    }

    assert_eq!(
        fleet.mock.hits(),
        served,
        "refused requests reach no provider"
    );
    let records = fleet.stop_and_read_records().await;
    let of_key = records
        .iter()
        .filter(|r| r.key_id.as_deref() == Some(key_id.as_str()));
    assert_eq!(of_key.filter(|r| r.status == 200).count(), served);
    assert_eq!(count(&records, 401), 4, "every refusal is recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_set_with_the_cli_binds_both_within_a_second_and_its_removal_frees_both() {
    let Some(services) = services() else { return };
    let mut fleet = Fleet::new("budgets", &services).await;
    fleet.start_replicas(2);
    let (_, secret) = fleet.create_key("budgets").await;
    let caller = fleet.caller(&secret);
    let mut served = 0;
    for replica in [0, 1] {
        let answer = caller.chat(replica).await;
        assert_eq!((answer.status, answer.request_limit), (200, None));
        served += 1;
    }

    // Set by another process: no replica rereads its budgets on its own within the test.
    fleet.cli(&["budgets", "set", "team:qa", "--rpm", "5"]);
    let since = Instant::now();
    // A replica has the limit once its answers carry it; from then on it is not asked again
    // until both have it, so that each spends one request of the five at most while waiting.
    let mut bound_after: [Option<Duration>; 2] = [None, None];
    let mut counted = 0;
    while bound_after.contains(&None) && since.elapsed() < GIVE_UP {
        for (replica, bound) in bound_after.iter_mut().enumerate() {
            if bound.is_some() {
                continue;
            }
            let answer = caller.chat(replica).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            served += 1;
            if let Some(limit) = answer.request_limit {
                assert_eq!(limit, "5");
                *bound = Some(since.elapsed());
                counted += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (replica, bound) in bound_after.iter().enumerate() {
        assert!(
            bound.is_some_and(|after| after < WITHIN),
            "replica {replica} had the new limit after {bound:?}\n{}",
            fleet.logs()
        );
    }
    eprintln!("the new budget reached the replicas after {bound_after:?}");

    // Both count against the one limit in Redis: five requests in all, whichever replica.
    let mut refused = 0;
    for i in 0..10 {
        let answer = caller.chat(i % 2).await;
        match answer.status {
            200 => {
                assert_eq!(answer.request_limit.as_deref(), Some("5"));
                counted += 1;
                served += 1;
            }
            429 => {
                assert_eq!(answer.body["error"]["code"], "rate_limit_exceeded");
                assert!(
                    answer
                        .error_message()
                        .contains("team `qa` has used 5 of its 5"),
                    "{answer:?}"
                );
                refused += 1;
            }
            _ => panic!("{answer:?}"),
        }
    }
    assert_eq!(
        counted, 5,
        "exactly the limit is admitted across both replicas"
    );
    assert_eq!(refused, 12 - counted);

    // Removed through replica 1's admin API: it rereads at once, and replica 0 is told.
    let deleted = fleet
        .admin(reqwest::Method::DELETE, 1, "/budgets?scope=team:qa")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(
        deleted.json::<Value>().await.unwrap(),
        json!({"deleted": 1})
    );
    let since = Instant::now();
    let answer = caller.chat(1).await;
    assert_eq!((answer.status, answer.request_limit), (200, None));
    served += 1;
    let freed_after = loop {
        let answer = caller.chat(0).await;
        if answer.status == 200 {
            assert_eq!(answer.request_limit, None);
            served += 1;
            break since.elapsed();
        }
        assert_eq!(answer.status, 429, "{answer:?}");
        refused += 1;
        assert!(since.elapsed() < GIVE_UP, "still limited\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        freed_after < WITHIN,
        "replica 0 lifted the limit after {freed_after:?}"
    );

    assert_eq!(
        fleet.mock.hits(),
        served,
        "refused requests reach no provider"
    );
    let records = fleet.stop_and_read_records().await;
    assert_eq!(count(&records, 200), served);
    assert_eq!(count(&records, 429), refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_file_reloads_on_both_under_load_without_a_failed_request_or_a_cut_stream() {
    let Some(services) = services() else { return };
    let mut fleet = Fleet::new("reload", &services).await;
    let (_, secret) = fleet.create_key("reload").await;
    fleet.start_replicas(2);
    let caller = fleet.caller(&secret);

    // A stream on each replica, open across the reload: 20 words, 150 ms apart. Each is read
    // to its end by a task of its own, which says when the end came.
    let words = "one two three four five six seven eight nine ten eleven twelve thirteen \
                 fourteen fifteen sixteen seventeen eighteen nineteen twenty";
    let mut streams = Vec::new();
    for replica in [0, 1] {
        let response = caller
            .request(
                replica,
                &format!("#mock chunk_delay_ms=150 text={words}"),
                true,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-sluice-deployment"], "a");
        streams.push(tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut streamed = String::new();
            while let Some(chunk) = body.next().await {
                streamed.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
            }
            (streamed, Instant::now())
        }));
    }

    // Four clients, two on each replica, one request after another until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (caller, stop, sent) = (caller.clone(), stop.clone(), sent.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let answer = caller.chat(i % 2).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    answers.push((answer.status, answer.deployment));
                }
                answers
            })
        })
        .collect();
    let traffic = |at_least: usize| {
        let sent = sent.clone();
        async move {
            while sent.load(Ordering::Relaxed) < at_least {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    traffic(20).await;

    // Replica 0 is told with SIGHUP, replica 1 sees the file change through its watch.
    let hash = fleet.write_config("b");
    fleet.sighup(0);
    let since = Instant::now();
    for replica in [0, 1] {
        loop {
            let active = fleet.active_config(replica).await;
            if active["sha256"] == hash.as_str() {
                assert_eq!(active["reloads"], 1);
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "replica {replica} still serves {active}\n{}",
                fleet.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let reloaded = Instant::now();
    let before = sent.load(Ordering::Relaxed);
    traffic(before + 20).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    let failed: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 200)
        .collect();
    assert_eq!(
        failed,
        Vec::<&(u16, Option<String>)>::new(),
        "no request failed"
    );
    let on = |deployment: &str| {
        answers
            .iter()
            .filter(|(_, d)| d.as_deref() == Some(deployment))
            .count()
    };
    assert!(on("a") > 0 && on("b") >= 20, "a {}, b {}", on("a"), on("b"));

    // The streams ran on past the reload, whole, on the deployment they started on.
    for stream in streams {
        let (streamed, ended) = stream.await.unwrap();
        assert!(ended > reloaded, "the stream ended before the reload");
        assert!(streamed.trim_end().ends_with("data: [DONE]"), "{streamed}");
        let text: String = streamed
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str::<Value>(data).ok())
            .filter_map(|event| {
                event["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(text, words, "the whole answer, uncut");
    }

    // Both serve the new file: `m` is gpt-4o on `b`, as the mock was asked.
    for replica in [0, 1] {
        let answer = caller.chat(replica).await;
        assert_eq!(
            (answer.status, answer.deployment.as_deref()),
            (200, Some("b"))
        );
        assert_eq!(fleet.mock.last_request().unwrap().body["model"], "gpt-4o");
    }
    let models: Vec<Value> = fleet
        .mock
        .requests()
        .into_iter()
        .map(|r| r.body["model"].clone())
        .collect();
    assert!(models.contains(&json!("gpt-4o-mini")) && models.contains(&json!("gpt-4o")));

    let records = fleet.stop_and_read_records().await;
    let streamed: Vec<_> = records.iter().filter(|r| r.stream).collect();
    assert_eq!(streamed.len(), 2);
    assert!(
        streamed
            .iter()
            .all(|r| r.status == 200 && r.deployment.as_deref() == Some("a"))
    );
    assert_eq!(records.len(), answers.len() + 4);
    assert_eq!(count(&records, 200), records.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_replica_mid_load_leaves_the_other_serving_every_request_sent_to_it() {
    let Some(services) = services() else { return };
    let mut fleet = Fleet::new("kill", &services).await;
    // A key per replica, to tell their records apart, and a limit to count in Redis.
    let (_, secret_a) = fleet.create_key("to-the-killed").await;
    let (key_b, secret_b) = fleet.create_key("to-the-survivor").await;
    let store = fleet.store().await;
    let row = BudgetRow::new("team:qa", "requests", "day", 1_000_000);
    store.budgets.put_budget(row).await.unwrap();
    store.close().await;
    fleet.start_replicas(2);
    let (to_a, to_b) = (fleet.caller(&secret_a), fleet.caller(&secret_b));

    // Three clients on the survivor, two on the replica to be killed; each request takes the
    // mock 20 ms, so some are in flight on both when the kill comes.
    let stop = Arc::new(AtomicBool::new(false));
    let served_by_b = Arc::new(AtomicUsize::new(0));
    let served_by_a = Arc::new(AtomicUsize::new(0));
    let survivors: Vec<_> = (0..3)
        .map(|_| {
            let (caller, stop, served) = (to_b.clone(), stop.clone(), served_by_b.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match caller.request(1, "#mock delay_ms=20", false).send().await {
                        Ok(response) => {
                            let answer = Answer::of(response).await;
                            if answer.status == 200 && answer.request_limit.is_some() {
                                served.fetch_add(1, Ordering::Relaxed);
                            } else {
                                failures.push(format!("{answer:?}"));
                            }
                        }
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    let doomed: Vec<_> = (0..2)
        .map(|_| {
            let (caller, stop, served) = (to_a.clone(), stop.clone(), served_by_a.clone());
            tokio::spawn(async move {
                // After the kill its requests fail: that is not what this test is about.
                while !stop.load(Ordering::Relaxed) {
                    match caller.request(0, "#mock delay_ms=20", false).send().await {
                        Ok(response) if response.status() == 200 => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    let until = |counter: &Arc<AtomicUsize>, at_least: usize| {
        let counter = counter.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while counter.load(Ordering::Relaxed) < at_least {
                assert!(Instant::now() < deadline, "only {counter:?} served");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    until(&served_by_a, 10).await;
    until(&served_by_b, 15).await;

    let mut killed = fleet.replicas[0].child.take().unwrap();
    killed.kill().unwrap();
    let status = killed.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let at_kill = served_by_b.load(Ordering::Relaxed);
    until(&served_by_b, at_kill + 30).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for client in survivors {
        failures.extend(client.await.unwrap());
    }
    for client in doomed {
        client.await.unwrap();
    }
    assert_eq!(failures, Vec::<String>::new(), "\n{}", fleet.logs());
    let answer = to_b.chat(1).await;
    assert_eq!(
        (answer.status, answer.deployment.as_deref()),
        (200, Some("a"))
    );
    let served = served_by_b.load(Ordering::Relaxed) + 1;

    // The survivor's records are all there: it never stopped writing them.
    let records = fleet.stop_and_read_records().await;
    let of_b: Vec<_> = records
        .iter()
        .filter(|r| r.key_id.as_deref() == Some(key_b.as_str()))
        .collect();
    assert_eq!(of_b.len(), served);
    assert!(of_b.iter().all(|r| r.status == 200));
}
