//! The `sluice` binary. Parses the command line and hands off: `serve` and `demo` to
//! [`serve`], key and log commands to [`admin`], `migrate` to [`migrate`], `budgets` to
//! [`budgets`], `usage` to [`usage`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

mod admin;
mod budgets;
mod migrate;
mod policy;
mod reliability;
mod reload;
mod serve;
mod table;
mod usage;

/// mimalloc instead of the system allocator: the request path allocates many small short-lived
/// buffers on two threads, where glibc malloc spent ~12% of the gateway's CPU, much of it in
/// lock contention (measured with `perf record` under load; see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "The one egress point for every LLM call"
)]
struct Cli {
    /// Configuration file [default: ./sluice.toml when it exists, else built-in defaults]
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Address to listen on, overriding `server.listen` (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// The record journal's folder, overriding `store.journal` (each replica on a host
        /// needs its own).
        #[arg(long)]
        journal: Option<PathBuf>,
    },
    /// Run the gateway against a built-in mock provider, with a fresh demo key: no provider key needed.
    Demo {
        #[arg(long, default_value = "127.0.0.1:4000")]
        listen: String,
        /// Print the base URL and key as one JSON line (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Validate the configuration file and print what it declares.
    CheckConfig,
    /// Bring the store's schema up to date (SQLite file or Postgres) and print what was
    /// applied. `serve` does this at start too.
    ///
    /// With --from-sqlite, then copy an embedded store into the configured Postgres store:
    /// run it while the old gateway still serves, start the replicas, and run it once more
    /// after the old gateway has stopped (docs/deployment.md, "Migrating from the embedded
    /// store").
    Migrate {
        /// The embedded store to copy from (its `sluice.db`): every key with the hash of its
        /// secret (so clients keep their keys; revoked and expired ones too), every budget row
        /// and every request record with its bodies. Safe to run again: a key or record
        /// already copied is left as it is, a budget row is replaced only by one updated later,
        /// and the counts say how many were new.
        #[arg(long, value_name = "PATH")]
        from_sqlite: Option<PathBuf>,
    },
    /// Manage virtual keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Set, allocate, show and delete budgets and rate limits.
    #[command(subcommand)]
    Budgets(budgets::BudgetsCommand),
    /// Spend, tokens, requests, kWh and kgCO2e per team, key, user, model, feature... over any
    /// span, as a table or JSON.
    Usage(usage::UsageArgs),
    /// Find request records: the latest ones, filtered (key, team, user, alias, provider,
    /// deployment, status, time), followed as they are written, or one explained (`show`).
    Logs(admin::LogsArgs),
    /// Show a running gateway's deployments: circuit breakers, load, latency, retry budgets.
    Status {
        /// The gateway's base URL [default: from `server.listen` in the configuration]
        #[arg(long)]
        url: Option<String>,
        /// The raw `/health` document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replay requests through every deployment of a route (fallbacks included) and print a
    /// readiness table: success, p50/p99 latency, schema validity. Exits 1 when a deployment
    /// is below --min-success.
    Drill {
        /// The route (alias) to drill.
        route: String,
        /// A JSONL file of OpenAI chat request bodies [default: a built-in set of three:
        /// plain, streamed, structured]
        #[arg(long)]
        requests: Option<PathBuf>,
        /// How many times each request is sent to each deployment.
        #[arg(long, default_value_t = 5)]
        repeat: u32,
        /// Requests in flight per deployment.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Success rate (0-1) a deployment needs to count as ready.
        #[arg(long, default_value_t = 0.95)]
        min_success: f64,
        /// One JSON object per deployment instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run only the mock provider (OpenAI and Anthropic dialects), for tests and benchmarks.
    ///
    /// With the chaos options it fails and stalls exact shares of chat requests (not random:
    /// 0.5 is every second request), so a fault benchmark sees the same pattern every run.
    Mock(serve::MockArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // One thread for commands, and for the gateway's accept loop and background work; `serve`
    // serves connections on worker threads of its own (`server.workers`).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let config = cli.config;
        match cli.command {
            Command::Serve { listen, journal } => serve::serve(config, listen, journal).await,
            Command::Demo { listen, json } => serve::demo(config, listen, json).await,
            Command::CheckConfig => admin::check_config(config),
            Command::Migrate { from_sqlite } => migrate::migrate(config, from_sqlite).await,
            Command::Keys(command) => admin::keys(config, command).await,
            Command::Logs(args) => admin::logs(config, args).await,
            Command::Budgets(command) => budgets::budgets(config, command).await,
            Command::Usage(args) => usage::usage(config, args).await,
            Command::Mock(args) => serve::mock(args).await,
            Command::Status { url, json } => reliability::status(config, url, json).await,
            Command::Drill {
                route,
                requests,
                repeat,
                concurrency,
                min_success,
                json,
            } => {
                let options = reliability::DrillOptions {
                    route,
                    requests,
                    repeat,
                    concurrency,
                    min_success,
                    json,
                };
                reliability::drill(config, options).await
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
