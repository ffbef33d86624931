//! The numbered schema migrations of both SQL stores, written once.
//!
//! Each migration is a template in which a few tokens stand for what the two
//! dialects spell differently ([`Dialect::render`]); everything else (tables,
//! columns, keys, cascades, indexes) is the same text for SQLite and
//! PostgreSQL, so a database of either kind at version N has the same tables
//! by construction.
//!
//! The list is append-only: a released entry is never edited, a change is a
//! new entry. Each backend runs [`pending`] in one transaction that also
//! records every step in `schema_migrations` (see [`ledger_ddl`]); how it
//! makes that transaction exclusive is its own business (`BEGIN IMMEDIATE`
//! for SQLite, an advisory lock for PostgreSQL).

use std::fmt::Display;

use super::{StoreError, StoreResult};

/// One numbered step of the schema, as a template (see [`Dialect::render`]).
pub(super) struct Migration {
    pub version: i64,
    pub name: &'static str,
    template: &'static str,
}

/// Every migration, in order.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        template: INITIAL,
    },
    Migration {
        version: 2,
        name: "audit",
        template: AUDIT,
    },
    Migration {
        version: 3,
        name: "key limits and lifetimes",
        template: KEY_LIMITS,
    },
    Migration {
        version: 4,
        name: "usage",
        template: USAGE,
    },
    Migration {
        version: 5,
        name: "runs by agent",
        template: RUNS_BY_AGENT,
    },
    Migration {
        version: 6,
        name: "approvals",
        template: APPROVALS,
    },
    Migration {
        version: 7,
        name: "webhooks",
        template: WEBHOOKS,
    },
    Migration {
        version: 8,
        name: "approval and webhook gaps",
        template: APPROVAL_AND_WEBHOOK_STATUS,
    },
    Migration {
        version: 9,
        name: "key models",
        template: KEY_MODELS,
    },
    Migration {
        version: 10,
        name: "run error codes",
        template: RUN_ERROR_CODES,
    },
    Migration {
        version: 11,
        name: "session history index",
        template: SESSION_HISTORY,
    },
];

/// The SQL dialect a migration is rendered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The template's SQL in this dialect. The tokens:
    ///
    /// - `{pk}`: the paging key. SQLite: `INTEGER PRIMARY KEY AUTOINCREMENT`,
    ///   an alias of the rowid (stable across VACUUM) whose numbers are never
    ///   reused. PostgreSQL: `BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY
    ///   KEY`, likewise never reused. Either way a cursor never skips a row that existed
    ///   when the page was read.
    /// - `{int}`: a 64-bit integer (`INTEGER` / `BIGINT`).
    /// - `{without_rowid}`: after a table keyed by `(agent_id, seq)`; SQLite
    ///   stores such a table in key order (`WITHOUT ROWID`), PostgreSQL has
    ///   no such option and needs none.
    ///
    /// JSON and timestamps stay TEXT in both, so they come back exactly as
    /// written (no JSONB parse, no timestamp reformatting).
    pub fn render(self, template: &str) -> String {
        let (pk, int, without_rowid) = match self {
            Self::Sqlite => (
                "INTEGER PRIMARY KEY AUTOINCREMENT",
                "INTEGER",
                " WITHOUT ROWID",
            ),
            Self::Postgres => (
                "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                "BIGINT",
                "",
            ),
        };
        template
            .replace("{pk}", pk)
            .replace("{int}", int)
            .replace("{without_rowid}", without_rowid)
    }
}

/// A migration still to apply, rendered for one database.
pub(super) struct Pending {
    pub version: i64,
    pub name: &'static str,
    pub sql: String,
}

impl Pending {
    /// The error when this step's SQL fails: names the step, so an operator
    /// knows which migration a half-upgraded database stopped at.
    pub fn failed(&self, e: impl Display) -> StoreError {
        let (version, name) = (self.version, self.name);
        StoreError::Unavailable(format!("migration {version} ({name}): {e}"))
    }
}

/// `CREATE TABLE IF NOT EXISTS schema_migrations`, in `dialect`.
pub(super) fn ledger_ddl(dialect: Dialect) -> String {
    dialect.render(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version {int} PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at TEXT NOT NULL
        );",
    )
}

/// The migrations after `current` (the highest version recorded, 0 for
/// none), rendered for `dialect`. A database newer than this build is
/// refused rather than run against a schema it does not know.
pub(super) fn pending(dialect: Dialect, current: i64) -> StoreResult<Vec<Pending>> {
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Unavailable(format!(
            "database schema version {current} is newer than this weir knows ({known})"
        )));
    }
    Ok(MIGRATIONS
        .iter()
        .filter(|m| m.version > current)
        .map(|m| Pending {
            version: m.version,
            name: m.name,
            sql: dialect.render(m.template),
        })
        .collect())
}

/// Every foreign key that cascades has an index starting with its column,
/// or `DELETE FROM agents` would scan whole tables.
const INITIAL: &str = "
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE keys (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    scopes TEXT NOT NULL,
    rpm {int} NOT NULL,
    hash TEXT NOT NULL,
    created_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX keys_account ON keys(account_id, pk);
CREATE TABLE agents (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    model TEXT NOT NULL,
    system TEXT NOT NULL,
    tools TEXT NOT NULL,
    tags TEXT NOT NULL,
    metadata TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX agents_account ON agents(account_id, pk);
CREATE TABLE tools (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    json_schema TEXT NOT NULL,
    kind TEXT NOT NULL,
    url TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (account_id, name)
);
CREATE INDEX tools_account ON tools(account_id, pk);
CREATE TABLE sessions (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX sessions_agent ON sessions(agent_id, pk);
CREATE TABLE runs (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL,
    status TEXT NOT NULL,
    stop_reason TEXT,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX runs_agent ON runs(agent_id);
CREATE TABLE events (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    seq {int} NOT NULL,
    run_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    message_type TEXT NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
){without_rowid};
CREATE INDEX events_session ON events(agent_id, session_id, seq);
CREATE INDEX events_run ON events(agent_id, run_id, seq);
CREATE TABLE logs (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    seq {int} NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (agent_id, seq)
){without_rowid};
";

/// The audit log (`GET /v1/audit`). No foreign key to `accounts`: rows
/// outlive nothing they point at and must not be refused. Lists read
/// `(account_id, pk)` backwards; the target filter has its own index; the
/// prune deletes by `created_at`.
const AUDIT: &str = "
CREATE TABLE audit (
    pk {pk},
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    actor_key_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    client_addr TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX audit_account ON audit(account_id, pk);
CREATE INDEX audit_target ON audit(account_id, target, pk);
CREATE INDEX audit_created ON audit(created_at);
";

/// Per-key limits (NULL: the gateway's default), expiry and the previous
/// secret of a rotation; the account-wide token budgets (NULL: none).
const KEY_LIMITS: &str = "
ALTER TABLE keys ADD COLUMN tpm {int};
ALTER TABLE keys ADD COLUMN daily_tokens {int};
ALTER TABLE keys ADD COLUMN max_runs {int};
ALTER TABLE keys ADD COLUMN max_websockets {int};
ALTER TABLE keys ADD COLUMN max_sse_streams {int};
ALTER TABLE keys ADD COLUMN expires_at TEXT;
ALTER TABLE keys ADD COLUMN prev_hash TEXT;
ALTER TABLE keys ADD COLUMN prev_until TEXT;
ALTER TABLE accounts ADD COLUMN tpm {int};
ALTER TABLE accounts ADD COLUMN daily_tokens {int};
";

/// Usage sums (`GET /v1/usage`): one row per account, UTC day, key,
/// model, agent and provider (empty when none applies), added to by every
/// gateway's writer. Keyed by account and day first: a read is one
/// account's range of days. No foreign key, as for the audit log.
const USAGE: &str = "
CREATE TABLE usage (
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    key_id TEXT NOT NULL,
    model TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    requests {int} NOT NULL,
    runs {int} NOT NULL,
    prompt_tokens {int} NOT NULL,
    completion_tokens {int} NOT NULL,
    PRIMARY KEY (account_id, day, key_id, model, agent_id, provider)
){without_rowid};
";

/// `GET /v1/agents/{id}/runs` reads an agent's runs in `pk` order, either
/// way, from a cursor. SQLite's `runs_agent` already ends with the rowid
/// (`pk`); PostgreSQL needs the column in the index to avoid a sort.
const RUNS_BY_AGENT: &str = "
CREATE INDEX runs_agent_pk ON runs(agent_id, pk);
";

/// Tool calls waiting for (or given) a person's approval, each holding what
/// its parked run needs to go on (`state`, JSON the runtime owns), and the
/// tools whose every call needs approval.
const APPROVALS: &str = "
ALTER TABLE tools ADD COLUMN requires_approval {int} NOT NULL DEFAULT 0;
CREATE TABLE approvals (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    tool TEXT NOT NULL,
    arguments TEXT NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    decided_by TEXT,
    reason TEXT,
    created_at TEXT NOT NULL,
    decided_at TEXT
);
CREATE INDEX approvals_pending ON approvals (status, expires_at);
CREATE INDEX approvals_run ON approvals (account_id, run_id);
";

/// Outbound webhooks: subscriptions (secrets sealed under the server key)
/// and the delivery queue. Deliveries are claimed by `next_attempt_at`
/// (Unix ms, NULL once finished) and listed per subscription by `pk`.
const WEBHOOKS: &str = "
CREATE TABLE webhooks (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    agent_id TEXT,
    description TEXT NOT NULL,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhooks_account ON webhooks(account_id, pk);
CREATE TABLE webhook_deliveries (
    pk {pk},
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    webhook_id TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts {int} NOT NULL,
    next_attempt_at {int},
    expires_at {int} NOT NULL,
    claimed_by TEXT,
    claimed_until {int},
    history TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries(webhook_id, pk);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at);
";

/// The built-in tools an agent wants approved (a JSON array of names);
/// the few runs that wait for approval, for the sweeper's look for
/// decided approvals whose run never went on (a partial index: both
/// dialects have them); a subscription's status (`disabled` once its
/// receiver answered 410 Gone); finished deliveries by age, for pruning.
const APPROVAL_AND_WEBHOOK_STATUS: &str = "
ALTER TABLE agents ADD COLUMN approval_required TEXT NOT NULL DEFAULT '[]';
CREATE INDEX runs_waiting ON runs(account_id, id) WHERE status = 'waiting_approval';
ALTER TABLE webhooks ADD COLUMN status TEXT NOT NULL DEFAULT 'enabled';
CREATE INDEX webhook_deliveries_done ON webhook_deliveries(updated_at) WHERE next_attempt_at IS NULL;
";

/// The models a key may use: a JSON array of names; NULL: any model.
const KEY_MODELS: &str = "
ALTER TABLE keys ADD COLUMN models TEXT;
";

/// The code of a failed run's `error` event (`token_budget_exceeded`, …);
/// NULL for a run that did not fail, and for runs stored before it.
const RUN_ERROR_CODES: &str = "
ALTER TABLE runs ADD COLUMN error_code TEXT;
";

/// A session's user and assistant messages, newest first for a run's
/// conversation (`session_history`): a partial index, so reading them
/// backwards skips the token deltas between them instead of visiting each
/// one's row (issue 22).
const SESSION_HISTORY: &str = "
CREATE INDEX events_history ON events(agent_id, session_id, seq)
    WHERE message_type IN ('user_message', 'assistant_message');
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_is_rendered_in_both_dialects() {
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for m in MIGRATIONS {
                let sql = dialect.render(m.template);
                assert!(!sql.contains('{'), "{dialect:?} migration {}", m.version);
            }
            assert!(!ledger_ddl(dialect).contains('{'));
        }
    }

    #[test]
    fn versions_are_numbered_one_up() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn pending_is_what_comes_after_the_recorded_version() {
        let known = MIGRATIONS.len() as i64;
        let all = pending(Dialect::Sqlite, 0).expect("from scratch");
        assert_eq!(all.len(), MIGRATIONS.len());
        assert!(pending(Dialect::Postgres, known)
            .expect("current")
            .is_empty());
        match pending(Dialect::Sqlite, known + 1) {
            Err(StoreError::Unavailable(m)) => assert!(m.contains("newer"), "{m}"),
            other => panic!("expected a refusal, got {:?}", other.map(|p| p.len())),
        }
    }
}
