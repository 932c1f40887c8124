//! Hot reload of the configuration file: on SIGHUP, and, with `server.watch_config` (the
//! default), when the file's content changes (its SHA-256, checked every second: no watcher
//! dependency, and an edit through a rename or a mount is seen as well as one in place).
//!
//! A changed file is read and validated exactly as at start (`sluice check-config`'s errors),
//! then its router is built with the health of unchanged deployments carried over and swapped
//! into the gateway whole ([`Gateway::reconfigure`]); requests under way finish on the
//! configuration they started with. An invalid file is refused, logged with its errors and
//! counted; the running configuration keeps serving. Settings fixed at start (listeners,
//! store, counters, exporters: [`Settings::needs_restart`]) are reported and left as they are.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_config::{ConfigError, ProviderKeys, Settings};
use sluice_pipeline::{ConfigSource, Gateway};
use tokio_util::sync::CancellationToken;

use crate::policy::{CounterRebuild, policy_parts};
use crate::serve::{router, upstream_timeouts};

/// How often the watch reads the file. A second: a config change is not urgent, and reading
/// and hashing a few kilobytes costs microseconds.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Why a configuration file was not put in force.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// Unreadable, not TOML, or invalid: the errors `sluice check-config` prints.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: the file is not UTF-8 text")]
    NotText { path: PathBuf },
    /// Valid, but a deployment could not be set up from it.
    #[error("{0:#}")]
    Unservable(anyhow::Error),
    /// The blocking read was cancelled (the runtime is shutting down).
    #[error("reading the configuration was interrupted")]
    Interrupted,
}

/// The configuration file a gateway serves, and what the command line overrides in it (which
/// a reload keeps, as the start did).
#[derive(Debug, Clone)]
pub(crate) struct ConfigFile {
    path: PathBuf,
    overrides: Overrides,
}

/// `sluice serve`'s options that override the file.
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// `--listen`
    pub(crate) listen: Option<SocketAddr>,
    /// `--journal`
    pub(crate) journal: Option<PathBuf>,
}

impl Overrides {
    pub(crate) fn apply(&self, settings: &mut Settings) {
        if let Some(listen) = self.listen {
            settings.server.listen = listen;
        }
        if let (Some(dir), Some(journal)) = (&self.journal, &mut settings.store.journal) {
            journal.dir.clone_from(dir);
        }
    }
}

/// A file's content: its bytes and their SHA-256 (hex).
struct Content {
    bytes: Vec<u8>,
    sha256: String,
}

impl ConfigFile {
    pub(crate) fn new(path: PathBuf, overrides: Overrides) -> ConfigFile {
        ConfigFile { path, overrides }
    }

    /// Reads and validates the file once, as at start: the settings and where they came from
    /// (the hash is of the very bytes validated).
    pub(crate) fn load(&self) -> Result<(Settings, ConfigSource), ReloadError> {
        let content = read(&self.path)?;
        let settings = self.validate(&content)?;
        Ok((settings, self.source(content.sha256)))
    }

    fn validate(&self, content: &Content) -> Result<Settings, ReloadError> {
        let text = std::str::from_utf8(&content.bytes).map_err(|_| ReloadError::NotText {
            path: self.path.clone(),
        })?;
        let mut settings = Settings::from_toml_with(
            text,
            &self.path,
            |name| std::env::var(name).ok(),
            ProviderKeys::Required,
        )?;
        self.overrides.apply(&mut settings);
        Ok(settings)
    }

    fn source(&self, sha256: String) -> ConfigSource {
        // Reported absolute: which file is in force should not depend on the reader's folder.
        let path = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        ConfigSource {
            path: Some(path),
            sha256,
            loaded_at_ms: sluice_types::clock::unix_ms(),
        }
    }
}

fn read(path: &Path) -> Result<Content, ReloadError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Content { bytes, sha256 })
}

/// What starts a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    Watch,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Watch => "file change",
        }
    }
}

/// Reloads the gateway's configuration until `stop`: on SIGHUP, and when the file changes if
/// `started.server.watch_config`. `file` is `None` when the gateway runs without one
/// (defaults, the demo): SIGHUP is then only logged. Reloads run one at a time, here.
pub(crate) struct Reloader {
    pub(crate) gateway: Gateway,
    pub(crate) file: Option<ConfigFile>,
    /// The settings the process started with: what a restart-only field is compared against.
    pub(crate) started: Settings,
    pub(crate) rebuild: CounterRebuild,
}

impl Reloader {
    /// Installs the SIGHUP handler at once (SIGHUP's default action ends the process), then
    /// returns the task that reloads. Serve cancels `stop` and awaits the handle at shutdown.
    pub(crate) fn start(
        self,
        stop: CancellationToken,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        #[cfg(unix)]
        let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| anyhow::anyhow!("listening for SIGHUP: {e}"))?;
        let watch = self.started.server.watch_config && self.file.is_some();
        if let Some(file) = &self.file {
            tracing::info!(path = %file.path.display(), watch, "the configuration reloads on SIGHUP, and on change when watched");
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "owned: serve cancels `stop` and awaits the JoinHandle at shutdown"
        )]
        let task = tokio::spawn(async move {
            let mut last_seen = self.gateway.current().config_source().sha256.clone();
            let mut ticks = tokio::time::interval(WATCH_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                #[cfg(unix)]
                let hangup = hangups.recv();
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                let trigger = tokio::select! {
                    () = stop.cancelled() => return,
                    // `None`: the signal driver is gone; the branch stays off this turn.
                    Some(()) = hangup => Trigger::Signal,
                    _ = ticks.tick(), if watch => Trigger::Watch,
                };
                self.reload(trigger, &mut last_seen).await;
            }
        });
        Ok(task)
    }

    /// One reload: reads the file, and puts it in force when it changed (a watch tick) or
    /// differs from the configuration in force (SIGHUP). `last_seen` is the hash of the content
    /// last looked at, valid or not, so an invalid file is reported once, not every second.
    async fn reload(&self, trigger: Trigger, last_seen: &mut String) {
        let Some(file) = &self.file else {
            tracing::warn!(
                "SIGHUP: this gateway runs without a configuration file; nothing to reload"
            );
            return;
        };
        let path = file.path.clone();
        let content = match tokio::task::spawn_blocking(move || read(&path)).await {
            Ok(read) => read,
            Err(_) => Err(ReloadError::Interrupted),
        };
        let content = match content {
            Ok(content) => content,
            Err(e) => {
                // An unreadable file (being replaced, say) is reported once per state.
                if trigger == Trigger::Signal || !last_seen.is_empty() {
                    self.refuse(file, trigger, &e);
                }
                last_seen.clear();
                return;
            }
        };
        let active = self.gateway.current().config_source().sha256.clone();
        let changed = match trigger {
            Trigger::Watch => content.sha256 != *last_seen,
            Trigger::Signal => content.sha256 != active,
        };
        last_seen.clone_from(&content.sha256);
        if !changed {
            if trigger == Trigger::Signal {
                tracing::info!(path = %file.path.display(), sha256 = %active, "SIGHUP: the configuration file is unchanged");
            }
            return;
        }
        if content.sha256 == active {
            // Back to the content in force (an invalid edit undone): nothing to swap.
            return;
        }
        let validating = file.clone();
        let validated = tokio::task::spawn_blocking(move || {
            let settings = validating.validate(&content)?;
            Ok::<_, ReloadError>((settings, content.sha256))
        })
        .await
        .unwrap_or(Err(ReloadError::Interrupted));
        match validated.and_then(|(settings, sha256)| self.apply(file, settings, sha256)) {
            Ok(()) => {}
            Err(e) => self.refuse(file, trigger, &e),
        }
    }

    /// Builds the configuration's router and policy and swaps them in.
    fn apply(&self, file: &ConfigFile, next: Settings, sha256: String) -> Result<(), ReloadError> {
        let current = self.gateway.current();
        let router = router(&next, Some(current.router())).map_err(ReloadError::Unservable)?;
        let parts = policy_parts(&next, current.policy().counters().clone());
        let source = file.source(sha256);
        let sha256 = source.sha256.clone();
        self.gateway
            .reconfigure(router, upstream_timeouts(&next), parts, source);
        self.rebuild.set_alias_limits(&next);
        // New aliases' tokenizer tables, off the runtime's threads, as at start.
        let aliases: Vec<String> = next.aliases.keys().cloned().collect();
        drop(tokio::task::spawn_blocking(move || {
            sluice_pipeline::tokens::load_tokenizers(aliases.iter().map(String::as_str));
        }));
        tracing::info!(
            path = %file.path.display(),
            %sha256,
            deployments = next.deployments.len(),
            aliases = next.aliases.len(),
            "configuration reloaded"
        );
        let restart = self.started.needs_restart(&next);
        if !restart.is_empty() {
            tracing::warn!(
                fields = %restart.join(", "),
                "configuration reloaded, but these changed settings need a restart to take effect; until then the values the gateway started with stay"
            );
        }
        Ok(())
    }

    fn refuse(&self, file: &ConfigFile, trigger: Trigger, error: &ReloadError) {
        self.gateway.count_refused_reload();
        tracing::error!(
            path = %file.path.display(),
            trigger = trigger.as_str(),
            error = %error,
            "configuration reload refused; the running configuration keeps serving"
        );
    }
}
