//! Stores in this process's memory, for tests: every capability over plain collections, with
//! the same results as the databases (the conformance suite checks it). Nothing is persisted.
//!
//! One mutex guards everything; no call holds it across an `.await` (each works on the data
//! and returns a ready future).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::capabilities::{
    BudgetStore, ChargeHistory, KeyStore, RecordPruning, RecordQueries, RecordSink, StoreFuture,
    UsageReports,
};
use crate::keys::{KeyHash, StoredKey, pick_key};
use crate::query::AMBIGUOUS_SHOWN;
use crate::{
    Bodies, BudgetRow, ChargedUsage, CreatedKey, DrillRecords, KeyInfo, NewKey, RecordCursor,
    RecordFilter, RecordMatch, RecordPage, RequestRecord, StoreError, UsageQuery, UsageRow, now_ms,
};
use sluice_types::record::AttemptOutcome;

#[derive(Clone, Debug)]
pub(crate) struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Revocations, announced to [`KeyStore::key_changes`].
    key_changes: broadcast::Sender<KeyHash>,
}

/// Announcements a follower may fall behind by before it is told it missed some.
const KEY_CHANGES_CAPACITY: usize = 1024;

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore {
            state: Arc::default(),
            key_changes: broadcast::channel(KEY_CHANGES_CAPACITY).0,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    keys: Vec<(KeyHash, KeyInfo)>,
    budgets: BTreeMap<(String, String, String, String), BudgetRow>,
    /// In the order they were written, each with its position (the cursor's value).
    records: Vec<(i64, RequestRecord)>,
    /// The ids in `records`: a record written again is left as it was.
    record_ids: HashSet<String>,
    bodies: HashMap<String, Bodies>,
    written: i64,
}

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A future that is already done.
fn ready<'a, T: Send + 'a>(result: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

impl KeyStore for MemoryStore {
    fn create_key(&self, new: NewKey) -> StoreFuture<'_, CreatedKey> {
        let (created, hash) = KeyInfo::issue(new);
        self.state().keys.push((hash, created.info.clone()));
        ready(Ok(created))
    }

    fn list_keys(&self) -> StoreFuture<'_, Vec<KeyInfo>> {
        let mut keys: Vec<KeyInfo> = self.state().keys.iter().map(|(_, k)| k.clone()).collect();
        keys.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        ready(Ok(keys))
    }

    fn find_key_by_hash<'a>(&'a self, hash: &'a KeyHash) -> StoreFuture<'a, Option<KeyInfo>> {
        let state = self.state();
        let found = state.keys.iter().find(|(h, _)| h == hash);
        ready(Ok(found.map(|(_, k)| k.clone())))
    }

    fn revoke_key<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, KeyInfo> {
        let mut state = self.state();
        let candidates = state
            .keys
            .iter()
            .filter(|(_, k)| k.id.starts_with(id_or_prefix))
            .map(|(_, k)| k.clone())
            .collect();
        let picked = match pick_key(id_or_prefix, candidates) {
            Ok(key) => key,
            Err(e) => return ready(Err(e)),
        };
        let Some((hash, key)) = state.keys.iter_mut().find(|(_, k)| k.id == picked.id) else {
            return ready(Err(StoreError::KeyNotFound(id_or_prefix.to_owned())));
        };
        key.revoked_at.get_or_insert_with(now_ms);
        // Nobody following is not an error.
        let _ = self.key_changes.send(*hash);
        ready(Ok(key.clone()))
    }

    fn key_changes(&self) -> StoreFuture<'_, Option<crate::KeyChanges>> {
        let changes = crate::KeyChanges::memory(self.key_changes.subscribe());
        ready(Ok(Some(changes)))
    }

    fn export_keys(&self) -> StoreFuture<'_, Vec<StoredKey>> {
        let mut keys: Vec<StoredKey> = self
            .state()
            .keys
            .iter()
            .map(|(hash, info)| StoredKey {
                info: info.clone(),
                hash: *hash,
            })
            .collect();
        keys.sort_by(|a, b| (b.info.created_at, &b.info.id).cmp(&(a.info.created_at, &a.info.id)));
        ready(Ok(keys))
    }

    fn import_key<'a>(&'a self, key: &'a StoredKey) -> StoreFuture<'a, bool> {
        let mut state = self.state();
        let stored = state
            .keys
            .iter()
            .any(|(hash, info)| info.id == key.info.id || *hash == key.hash);
        if !stored {
            state.keys.push((key.hash, key.info.clone()));
        }
        ready(Ok(!stored))
    }
}

impl BudgetStore for MemoryStore {
    fn budgets(&self) -> StoreFuture<'_, Vec<BudgetRow>> {
        ready(Ok(self.state().budgets.values().cloned().collect()))
    }

    fn put_budget(&self, mut row: BudgetRow) -> StoreFuture<'_, BudgetRow> {
        row.updated_at = now_ms();
        let id = (
            row.scope.clone(),
            row.metric.clone(),
            row.period.clone(),
            row.model.clone(),
        );
        self.state().budgets.insert(id, row.clone());
        ready(Ok(row))
    }

    fn delete_budgets<'a>(
        &'a self,
        scope: &'a str,
        metric_and_period: Option<(&'a str, &'a str)>,
    ) -> StoreFuture<'a, u64> {
        let mut state = self.state();
        let before = state.budgets.len();
        state.budgets.retain(|(s, metric, period, _), _| {
            s != scope
                || metric_and_period
                    .is_some_and(|(m, p)| (m, p) != (metric.as_str(), period.as_str()))
        });
        ready(Ok((before - state.budgets.len()) as u64))
    }

    /// Only this process sees these rows, and it rereads them after its own changes.
    fn budget_changes(&self) -> StoreFuture<'_, Option<crate::BudgetChanges>> {
        ready(Ok(None))
    }

    fn import_budget<'a>(&'a self, row: &'a BudgetRow) -> StoreFuture<'a, bool> {
        let id = (
            row.scope.clone(),
            row.metric.clone(),
            row.period.clone(),
            row.model.clone(),
        );
        let mut state = self.state();
        let newer = state
            .budgets
            .get(&id)
            .is_none_or(|stored| stored.updated_at < row.updated_at);
        if newer {
            state.budgets.insert(id, row.clone());
        }
        ready(Ok(newer))
    }
}

impl RecordSink for MemoryStore {
    fn write_records<'a>(&'a self, records: &'a mut [RequestRecord]) -> StoreFuture<'a, u64> {
        let mut state = self.state();
        let mut new = 0;
        for record in records {
            if !state.record_ids.insert(record.id.clone()) {
                continue;
            }
            // Spent as the databases spend it: only the id stays behind.
            let id = record.id.clone();
            let mut record = std::mem::replace(
                record,
                RequestRecord {
                    id,
                    ..RequestRecord::default()
                },
            );
            if let Some(bodies) = record.bodies.take() {
                state.bodies.insert(record.id.clone(), bodies);
            }
            state.written += 1;
            let position = state.written;
            state.records.push((position, record));
            new += 1;
        }
        ready(Ok(new))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        ready(Ok(()))
    }
}

impl RecordQueries for MemoryStore {
    fn find_records<'a>(
        &'a self,
        filter: &'a RecordFilter,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage> {
        let state = self.state();
        let records = state
            .records
            .iter()
            .rev()
            .filter(|(_, r)| filter.matches(r))
            .take(limit as usize)
            .map(|(_, r)| r.clone())
            .collect();
        ready(Ok(RecordPage {
            records,
            cursor: RecordCursor(state.records.last().map_or(0, |(at, _)| *at)),
        }))
    }

    fn records_after<'a>(
        &'a self,
        filter: &'a RecordFilter,
        cursor: RecordCursor,
        limit: u32,
    ) -> StoreFuture<'a, RecordPage> {
        let state = self.state();
        let newest = state.records.last().map_or(cursor.0, |(at, _)| *at);
        let page: Vec<&(i64, RequestRecord)> = state
            .records
            .iter()
            .filter(|(at, r)| *at > cursor.0 && filter.matches(r))
            .take(limit as usize)
            .collect();
        let cursor = match page.last() {
            Some((at, _)) if page.len() >= limit as usize => RecordCursor(*at),
            _ => RecordCursor(newest.max(cursor.0)),
        };
        ready(Ok(RecordPage {
            records: page.into_iter().map(|(_, r)| r.clone()).collect(),
            cursor,
        }))
    }

    fn find_record<'a>(&'a self, id_or_prefix: &'a str) -> StoreFuture<'a, RecordMatch> {
        let state = self.state();
        let mut ids: Vec<&str> = state
            .records
            .iter()
            .map(|(_, r)| r.id.as_str())
            .filter(|id| id.starts_with(id_or_prefix))
            .collect();
        ids.sort_unstable();
        let found = match ids.as_slice() {
            [] => return ready(Ok(RecordMatch::NotFound)),
            [first, ..] if *first == id_or_prefix => *first,
            [only] => *only,
            _ => {
                let shown = AMBIGUOUS_SHOWN as usize;
                return ready(Ok(RecordMatch::Ambiguous {
                    more: ids.len() > shown,
                    ids: ids.iter().take(shown).map(|id| (*id).to_owned()).collect(),
                }));
            }
        };
        ready(Ok(match state.record(found) {
            Some(record) => RecordMatch::Found(Box::new(record)),
            None => RecordMatch::NotFound,
        }))
    }

    fn record<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<RequestRecord>> {
        ready(Ok(self.state().record(id)))
    }

    fn latest_records(&self, limit: u32) -> StoreFuture<'_, Vec<RequestRecord>> {
        let state = self.state();
        let latest = state.records.iter().rev().take(limit as usize);
        ready(Ok(latest.map(|(_, r)| r.clone()).collect()))
    }

    fn record_bodies<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, HashMap<String, Bodies>> {
        let state = self.state();
        let found = ids
            .iter()
            .filter_map(|id| Some((id.clone(), state.bodies.get(id)?.clone())))
            .collect();
        ready(Ok(found))
    }
}

impl State {
    fn record(&self, id: &str) -> Option<RequestRecord> {
        let (_, record) = self.records.iter().find(|(_, r)| r.id == id)?;
        Some(RequestRecord {
            bodies: self.bodies.get(id).cloned(),
            ..record.clone()
        })
    }
}

impl UsageReports for MemoryStore {
    fn usage_report<'a>(&'a self, query: &'a UsageQuery) -> StoreFuture<'a, Vec<UsageRow>> {
        let by = query.dimensions();
        let state = self.state();
        let mut groups: BTreeMap<Vec<Option<String>>, UsageRow> = BTreeMap::new();
        let in_span = state.records.iter().map(|(_, r)| r).filter(|r| {
            query.since_ms.is_none_or(|since| r.started_at >= since)
                && query.until_ms.is_none_or(|until| r.started_at < until)
                && (query.drills == DrillRecords::Include || r.drill_of.is_none())
        });
        for record in in_span {
            let values: Vec<Option<String>> = by.iter().map(|d| d.value_of(record)).collect();
            let row = groups.entry(values.clone()).or_insert_with(|| UsageRow {
                group: by.iter().copied().zip(values).collect(),
                ..UsageRow::default()
            });
            row.requests += 1;
            row.errors += u64::from(record.status >= 400 || record.error_code.is_some());
            row.input_tokens += u64::from(record.input_tokens.unwrap_or(0));
            row.output_tokens += u64::from(record.output_tokens.unwrap_or(0));
            row.cost_micros = row
                .cost_micros
                .saturating_add(record.cost_micros.unwrap_or(0));
            row.energy_uwh = row
                .energy_uwh
                .saturating_add(record.energy_uwh.unwrap_or(0));
            row.carbon_ug = row.carbon_ug.saturating_add(record.carbon_ug.unwrap_or(0));
        }
        let mut rows: Vec<UsageRow> = groups.into_values().collect();
        rows.sort_by(UsageRow::report_order);
        ready(Ok(rows))
    }
}

impl ChargeHistory for MemoryStore {
    fn charged_usage(
        &self,
        since_ms: i64,
        granularity_ms: i64,
    ) -> StoreFuture<'_, Vec<ChargedUsage>> {
        let granularity = granularity_ms.max(1);
        let state = self.state();
        type Chain = (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
        );
        let mut sums: BTreeMap<Chain, ChargedUsage> = BTreeMap::new();
        let charged = state.records.iter().map(|(_, r)| r).filter(|r| {
            r.started_at >= since_ms
                && r.drill_of.is_none()
                && r.key_id.is_some()
                && r.attempts
                    .iter()
                    .any(|a| a.outcome != AttemptOutcome::Skipped)
        });
        for r in charged {
            let slot_start = (r.started_at / granularity) * granularity;
            let tenant = r.tenant.as_ref().map(|t| t.0.clone());
            let chain: Chain = (
                tenant.clone(),
                r.organisation.clone(),
                r.team.clone(),
                r.project.clone(),
                r.key_id.clone(),
                r.user.clone(),
                r.alias.clone(),
                slot_start,
            );
            let sum = sums.entry(chain).or_insert_with(|| ChargedUsage {
                tenant,
                organisation: r.organisation.clone(),
                team: r.team.clone(),
                project: r.project.clone(),
                key_id: r.key_id.clone(),
                user: r.user.clone(),
                alias: r.alias.clone(),
                slot_start,
                requests: 0,
                tokens: 0,
                cost_micros: 0,
            });
            sum.requests += 1;
            sum.tokens +=
                u64::from(r.input_tokens.unwrap_or(0)) + u64::from(r.output_tokens.unwrap_or(0));
            sum.cost_micros += u64::try_from(r.cost_micros.unwrap_or(0)).unwrap_or(0);
        }
        ready(Ok(sums.into_values().collect()))
    }
}

impl RecordPruning for MemoryStore {
    fn prune_records<'a>(
        &'a self,
        older_than_ms: i64,
        _batch: u32,
        _stop: &'a CancellationToken,
    ) -> StoreFuture<'a, u64> {
        let mut guard = self.state();
        let state = &mut *guard;
        let before = state.records.len();
        let bodies = &mut state.bodies;
        let ids = &mut state.record_ids;
        state.records.retain(|(_, r)| {
            let keep = r.started_at >= older_than_ms;
            if !keep {
                bodies.remove(&r.id);
                ids.remove(&r.id);
            }
            keep
        });
        ready(Ok((before - state.records.len()) as u64))
    }
}
