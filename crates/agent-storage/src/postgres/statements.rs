//! The statements on a turn's path, each written as one round trip: creating-or-reading a
//! session, and storing a whole turn (session update or creation, message rows, the completion
//! of its idempotency claim, its response object and its usage in one statement).
//!
//! They are hand-written query fragments rather than `sql_query` so that they have a static query
//! id: diesel then keeps them as prepared statements per connection (`sql_query` is re-prepared,
//! one more round trip, on every call).

use chrono::{DateTime, Utc};
use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Double, Jsonb, Nullable, Text, Timestamptz};

/// The SQL types of a `sessions` row, in `SESSION_COLUMNS` order.
pub(super) type SessionRowType = (
    Text,
    Timestamptz,
    Timestamptz,
    BigInt,
    BigInt,
    BigInt,
    BigInt,
    Nullable<Text>,
    Nullable<Text>,
    Nullable<BigInt>,
);

const SESSION_COLUMNS: &str = "id, created_at, updated_at, next_sequence, turn_count, \
     prompt_tokens, completion_tokens, agent, summary, summary_through";

/// Inserts the session if it does not exist and returns its row, in one statement. Returns no
/// row only when another transaction created the session after this statement's snapshot.
#[derive(Debug)]
pub(super) struct EnsureSession<'a> {
    pub(super) id: &'a str,
    pub(super) now: DateTime<Utc>,
}

impl QueryId for EnsureSession<'_> {
    type QueryId = EnsureSession<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for EnsureSession<'_> {
    type SqlType = SessionRowType;
}

impl QueryFragment<Pg> for EnsureSession<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        push_session_ctes(&mut out, self.id, &self.now)?;
        out.push_sql(" SELECT ");
        out.push_sql(SESSION_COLUMNS);
        out.push_sql(" FROM session");
        Ok(())
    }
}

/// The common table expressions `inserted` (the session, if this statement created it) and
/// `session` (its row either way), for [`EnsureSession`] and [`OpenSession`]. Data-modifying
/// expressions must stay at the top level of a statement, hence a fragment rather than nesting.
fn push_session_ctes<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    id: &'b str,
    now: &'b DateTime<Utc>,
) -> QueryResult<()> {
    out.push_sql("inserted AS (INSERT INTO sessions (id, created_at, updated_at) VALUES (");
    out.push_bind_param::<Text, _>(id)?;
    out.push_sql(", ");
    out.push_bind_param::<Timestamptz, _>(now)?;
    out.push_sql(", ");
    out.push_bind_param::<Timestamptz, _>(now)?;
    out.push_sql(") ON CONFLICT (id) DO NOTHING RETURNING ");
    out.push_sql(SESSION_COLUMNS);
    out.push_sql("), session AS (SELECT ");
    out.push_sql(SESSION_COLUMNS);
    out.push_sql(" FROM inserted UNION ALL SELECT ");
    out.push_sql(SESSION_COLUMNS);
    out.push_sql(" FROM sessions WHERE id = ");
    out.push_bind_param::<Text, _>(id)?;
    out.push_sql(")");
    Ok(())
}

/// The SQL types of a `messages` row, in the order of its table (`MessageRow`).
pub(super) type MessageRowType = (
    Text,
    BigInt,
    Text,
    Text,
    Nullable<Jsonb>,
    Nullable<Text>,
    Nullable<BigInt>,
    Timestamptz,
    Nullable<BigInt>,
);

/// [`EnsureSession`], the session's last `limit` messages and its active run, in one statement:
/// a row per message, oldest first, each with the session's columns and the id of its active
/// run; or one row without a message for a session that has none. No row, as for `EnsureSession`, only when another transaction created
/// the session after this statement's snapshot.
#[derive(Debug)]
pub(super) struct OpenSession<'a> {
    pub(super) id: &'a str,
    pub(super) now: DateTime<Utc>,
    pub(super) limit: i64,
}

impl QueryId for OpenSession<'_> {
    type QueryId = OpenSession<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for OpenSession<'_> {
    type SqlType = (SessionRowType, Nullable<MessageRowType>, Nullable<Text>);
}

impl QueryFragment<Pg> for OpenSession<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        push_session_ctes(&mut out, self.id, &self.now)?;
        out.push_sql(
            ", recent AS (SELECT session_id, sequence, role, content, tool_calls, tool_call_id, \
             tokens, created_at, context_tokens FROM messages WHERE session_id = ",
        );
        out.push_bind_param::<Text, _>(self.id)?;
        out.push_sql(" ORDER BY sequence DESC LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(
            ") SELECT s.id, s.created_at, s.updated_at, s.next_sequence, s.turn_count, \
             s.prompt_tokens, s.completion_tokens, s.agent, s.summary, s.summary_through, \
             r.session_id, r.sequence, r.role, r.content, \
             r.tool_calls, r.tool_call_id, r.tokens, r.created_at, r.context_tokens, \
             (SELECT id FROM runs WHERE session_id = s.id AND status IN ('queued', 'in_progress', \
             'requires_action') LIMIT 1) FROM session s LEFT JOIN recent r ON true ORDER BY r.sequence",
        );
        Ok(())
    }
}

/// A turn's messages as columns, for `unnest`.
#[derive(Debug, Default)]
pub(super) struct MessageColumns<'a> {
    pub(super) sequences: Vec<i64>,
    pub(super) roles: Vec<&'a str>,
    pub(super) contents: Vec<&'a str>,
    pub(super) tool_calls: Vec<Option<serde_json::Value>>,
    pub(super) tool_call_ids: Vec<Option<&'a str>>,
    pub(super) tokens: Vec<Option<i64>>,
    pub(super) context_tokens: Vec<Option<i64>>,
}

/// Advances the session by a whole turn and inserts its messages, in one statement (so
/// atomically, without a transaction's extra round trips). The update only matches while the
/// session's `next_sequence` is `expected`, and the insert only runs on the updated row, so a
/// stale writer changes nothing and gets no row back. With an idempotency key, the key's record
/// gets the response in the same statement (only when the turn is stored). For a session's first
/// turn, see [`CreateTurn`].
#[derive(Debug)]
pub(super) struct AppendTurn<'a> {
    pub(super) id: &'a str,
    pub(super) expected: i64,
    pub(super) added: i64,
    pub(super) prompt_tokens: i64,
    pub(super) completion_tokens: i64,
    /// The agent of the turn: the session's, when it has none yet.
    pub(super) agent: Option<&'a str>,
    /// A compaction's summary and the sequence it covers up to.
    pub(super) summary: Option<&'a str>,
    pub(super) summary_through: Option<i64>,
    pub(super) now: DateTime<Utc>,
    pub(super) messages: MessageColumns<'a>,
    /// The idempotency claim to complete (none: the update matches no row), its response, and
    /// how long it is kept, in seconds.
    pub(super) idempotency_key: Option<&'a str>,
    pub(super) idempotency_response: Option<&'a str>,
    pub(super) retention_seconds: f64,
    /// A response to keep with the turn, as its record's JSON (none: nothing is inserted; see
    /// [`RESPONSE_FIELDS`]).
    pub(super) response: Option<serde_json::Value>,
    /// The run the turn completes (none: no run is checked or written), and its final answer.
    pub(super) run: Option<&'a str>,
    pub(super) output_text: Option<&'a str>,
    /// The run's origin when it has no record yet (see [`RunOrigin`]).
    pub(super) origin: RunOrigin<'a>,
}

/// Who started a run that has no record yet, and when: the turn's statement records it
/// completed. Both none for a run recorded in progress, which the statement completes.
#[derive(Debug, Default)]
pub(super) struct RunOrigin<'a> {
    pub(super) owner: Option<&'a str>,
    pub(super) started_at: Option<DateTime<Utc>>,
}

impl<'a> RunOrigin<'a> {
    pub(super) fn of(origin: Option<crate::model::RunOrigin<'a>>) -> Self {
        origin.map_or_else(Self::default, |origin| Self {
            owner: Some(origin.owner),
            started_at: Some(origin.started_at.into()),
        })
    }
}

impl QueryId for AppendTurn<'_> {
    type QueryId = AppendTurn<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for AppendTurn<'_> {
    type SqlType = SessionRowType;
}

impl QueryFragment<Pg> for AppendTurn<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        walk_turn(self, false, out)
    }
}

/// A session's first turn: [`AppendTurn`] with `expected` 0 that also creates the session when it
/// does not exist yet (an upsert whose update only matches an empty session), so a new session
/// costs no statement of its own. Two first turns racing on one id: one is stored, the other
/// gets no row back.
#[derive(Debug)]
pub(super) struct CreateTurn<'a>(pub(super) AppendTurn<'a>);

impl QueryId for CreateTurn<'_> {
    type QueryId = CreateTurn<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for CreateTurn<'_> {
    type SqlType = SessionRowType;
}

impl QueryFragment<Pg> for CreateTurn<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        walk_turn(&self.0, true, out)
    }
}

/// The turn statement; `create` makes its first part the upsert of [`CreateTurn`].
fn walk_turn<'b>(
    turn: &'b AppendTurn<'_>,
    create: bool,
    mut out: AstPass<'_, 'b, Pg>,
) -> QueryResult<()> {
    out.push_sql("WITH ");
    push_active_run(&mut out, &turn.run)?;
    if create {
        out.push_sql(
            ", updated AS (INSERT INTO sessions AS s (id, created_at, updated_at, \
             next_sequence, turn_count, prompt_tokens, completion_tokens, agent, summary, \
             summary_through) SELECT ",
        );
        out.push_bind_param::<Text, _>(turn.id)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&turn.now)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&turn.now)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&turn.added)?;
        out.push_sql(", 1, ");
        out.push_bind_param::<BigInt, _>(&turn.prompt_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&turn.completion_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&turn.agent)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&turn.summary)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<BigInt>, _>(&turn.summary_through)?;
        out.push_sql(" WHERE ");
        push_run_still_active(&mut out, &turn.run, &turn.origin)?;
        out.push_sql(
            " ON CONFLICT (id) DO UPDATE SET \
             next_sequence = s.next_sequence + EXCLUDED.next_sequence, \
             turn_count = s.turn_count + 1, \
             prompt_tokens = s.prompt_tokens + EXCLUDED.prompt_tokens, \
             completion_tokens = s.completion_tokens + EXCLUDED.completion_tokens, \
             agent = COALESCE(s.agent, EXCLUDED.agent), \
             summary = EXCLUDED.summary, summary_through = EXCLUDED.summary_through, \
             updated_at = EXCLUDED.updated_at WHERE s.next_sequence = 0 RETURNING ",
        );
    } else {
        out.push_sql(", updated AS (UPDATE sessions SET next_sequence = next_sequence + ");
        out.push_bind_param::<BigInt, _>(&turn.added)?;
        out.push_sql(", turn_count = turn_count + 1, prompt_tokens = prompt_tokens + ");
        out.push_bind_param::<BigInt, _>(&turn.prompt_tokens)?;
        out.push_sql(", completion_tokens = completion_tokens + ");
        out.push_bind_param::<BigInt, _>(&turn.completion_tokens)?;
        out.push_sql(", agent = COALESCE(agent, ");
        out.push_bind_param::<Nullable<Text>, _>(&turn.agent)?;
        // A compaction's summary replaces the one before (made from it, under this sequence).
        out.push_sql("), summary = COALESCE(");
        out.push_bind_param::<Nullable<Text>, _>(&turn.summary)?;
        out.push_sql(", summary), summary_through = COALESCE(");
        out.push_bind_param::<Nullable<BigInt>, _>(&turn.summary_through)?;
        out.push_sql(", summary_through), updated_at = ");
        out.push_bind_param::<Timestamptz, _>(&turn.now)?;
        out.push_sql(" WHERE id = ");
        out.push_bind_param::<Text, _>(turn.id)?;
        out.push_sql(" AND next_sequence = ");
        out.push_bind_param::<BigInt, _>(&turn.expected)?;
        out.push_sql(" AND ");
        push_run_still_active(&mut out, &turn.run, &turn.origin)?;
        out.push_sql(" RETURNING ");
    }
    out.push_sql(SESSION_COLUMNS);
    out.push_sql(
        "), inserted AS (INSERT INTO messages \
         (session_id, sequence, role, content, tool_calls, tool_call_id, tokens, created_at, \
         context_tokens) SELECT updated.id, m.sequence, m.role, m.content, m.tool_calls, \
         m.tool_call_id, m.tokens, updated.updated_at, m.context_tokens FROM updated CROSS JOIN \
         unnest(",
    );
    let columns = &turn.messages;
    out.push_bind_param::<Array<BigInt>, _>(&columns.sequences)?;
    out.push_sql(", ");
    out.push_bind_param::<Array<Text>, _>(&columns.roles)?;
    out.push_sql(", ");
    out.push_bind_param::<Array<Text>, _>(&columns.contents)?;
    out.push_sql(", ");
    out.push_bind_param::<Array<Nullable<Jsonb>>, _>(&columns.tool_calls)?;
    out.push_sql(", ");
    out.push_bind_param::<Array<Nullable<Text>>, _>(&columns.tool_call_ids)?;
    out.push_sql(", ");
    out.push_bind_param::<Array<Nullable<BigInt>>, _>(&columns.tokens)?;
    out.push_sql(", ");
    out.push_bind_param::<Array<Nullable<BigInt>>, _>(&columns.context_tokens)?;
    out.push_sql(
        ") AS m (sequence, role, content, tool_calls, tool_call_id, tokens, context_tokens)), \
         completed AS (UPDATE idempotency_records SET response = ",
    );
    out.push_bind_param::<Nullable<Text>, _>(&turn.idempotency_response)?;
    out.push_sql(", expires_at = now() + make_interval(secs => ");
    out.push_bind_param::<Double, _>(&turn.retention_seconds)?;
    out.push_sql(") WHERE key = ");
    out.push_bind_param::<Nullable<Text>, _>(&turn.idempotency_key)?;
    out.push_sql(" AND EXISTS (SELECT 1 FROM updated)), ");
    // The response, if any, at the session's place after this turn, with the turn's usage.
    out.push_sql(
        "recorded AS (INSERT INTO responses (id, session_id, sequence, created_at, model, \
         instructions, previous_response_id, temperature, top_p, max_output_tokens, user_name, \
         metadata, text_format, output_text, prompt_tokens, completion_tokens) SELECT r.id, \
         updated.id, updated.next_sequence, to_timestamp(r.created_at), r.model, r.instructions, \
         r.previous_response_id, r.temperature, r.top_p, r.max_output_tokens, r.user_name, \
         COALESCE(r.metadata, '{}'::jsonb), r.text_format, r.output_text, ",
    );
    out.push_bind_param::<BigInt, _>(&turn.prompt_tokens)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(&turn.completion_tokens)?;
    out.push_sql(" FROM updated CROSS JOIN jsonb_to_record(");
    out.push_bind_param::<Nullable<Jsonb>, _>(&turn.response)?;
    out.push_sql(RESPONSE_FIELDS);
    out.push_sql(" WHERE r.id IS NOT NULL), ");
    // The caller's usage of the day, in the same statement (see the usage_daily migration).
    out.push_sql(
        "counted AS (INSERT INTO usage_daily AS u \
         (owner, day, agent, shard, turns, prompt_tokens, completion_tokens) \
         SELECT CASE WHEN strpos(updated.id, ':') > 0 THEN split_part(updated.id, ':', 1) \
         ELSE 'anonymous' END, (updated.updated_at AT TIME ZONE 'UTC')::date, COALESCE(",
    );
    out.push_bind_param::<Nullable<Text>, _>(&turn.agent)?;
    out.push_sql(", ''), (hashtext(updated.id) & 63)::smallint, 1, ");
    out.push_bind_param::<BigInt, _>(&turn.prompt_tokens)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(&turn.completion_tokens)?;
    out.push_sql(
        " FROM updated ON CONFLICT (owner, day, agent, shard) DO UPDATE SET turns = u.turns + 1, \
         prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens, \
         completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens), ",
    );
    // The run, completed only with its turn.
    out.push_sql("finished AS (UPDATE runs SET status = 'completed', finished_at = updated.updated_at, lease_holder = NULL, lease_expires_at = NULL, output_text = ");
    out.push_bind_param::<Nullable<Text>, _>(&turn.output_text)?;
    out.push_sql(", prompt_tokens = ");
    out.push_bind_param::<BigInt, _>(&turn.prompt_tokens)?;
    out.push_sql(", completion_tokens = ");
    out.push_bind_param::<BigInt, _>(&turn.completion_tokens)?;
    out.push_sql(" FROM updated WHERE runs.id IN (SELECT id FROM active)), ");
    // Or recorded completed, when it had no record.
    push_run_insert(
        &mut out,
        &turn.run,
        &turn.origin,
        "updated.id",
        "updated.updated_at",
        (
            &turn.output_text,
            &turn.prompt_tokens,
            &turn.completion_tokens,
        ),
    )?;
    out.push_sql(" FROM updated WHERE ");
    out.push_bind_param::<Nullable<Text>, _>(&turn.origin.owner)?;
    out.push_sql("::text IS NOT NULL ON CONFLICT (id) DO NOTHING) SELECT ");
    out.push_sql(SESSION_COLUMNS);
    out.push_sql(" FROM updated");
    Ok(())
}

/// `recorded_run AS (INSERT INTO runs … SELECT …` (up to its `FROM`): the turn's run recorded
/// completed as it ends, with its session and end given as SQL.
fn push_run_insert<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    run: &'b Option<&str>,
    origin: &'b RunOrigin<'_>,
    session: &'static str,
    finished_at: &'static str,
    (output_text, prompt_tokens, completion_tokens): (&'b Option<&str>, &'b i64, &'b i64),
) -> QueryResult<()> {
    out.push_sql(
        "recorded_run AS (INSERT INTO runs (id, owner, session_id, status, background, \
         created_at, started_at, finished_at, output_text, prompt_tokens, completion_tokens) \
         SELECT ",
    );
    out.push_bind_param::<Nullable<Text>, _>(run)?;
    out.push_sql(", ");
    out.push_bind_param::<Nullable<Text>, _>(&origin.owner)?;
    out.push_sql(", ");
    out.push_sql(session);
    out.push_sql(", 'completed', false, ");
    out.push_bind_param::<Nullable<Timestamptz>, _>(&origin.started_at)?;
    out.push_sql(", ");
    out.push_bind_param::<Nullable<Timestamptz>, _>(&origin.started_at)?;
    out.push_sql(", ");
    out.push_sql(finished_at);
    out.push_sql(", ");
    out.push_bind_param::<Nullable<Text>, _>(output_text)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(prompt_tokens)?;
    out.push_sql(", ");
    out.push_bind_param::<BigInt, _>(completion_tokens)?;
    Ok(())
}

/// The common table expression `active`: the run `run` while it is in progress, locked until
/// the statement commits, so that a concurrent cancel either ends it first (and the turn is not
/// stored) or waits and finds it completed. Under read committed, a run ended by a transaction
/// that committed after this statement's snapshot is read again (and no longer matches).
fn push_active_run<'b>(out: &mut AstPass<'_, 'b, Pg>, run: &'b Option<&str>) -> QueryResult<()> {
    out.push_sql("active AS (SELECT id FROM runs WHERE id = ");
    out.push_bind_param::<Nullable<Text>, _>(run)?;
    out.push_sql(" AND status = 'in_progress' FOR UPDATE)");
    Ok(())
}

/// The condition that a statement writes only while its run (if any) is in progress: recorded
/// so, or, given its origin, not recorded at all (only its own process records it, and the
/// process does not while the turn is being stored).
fn push_run_still_active<'b>(
    out: &mut AstPass<'_, 'b, Pg>,
    run: &'b Option<&str>,
    origin: &'b RunOrigin<'_>,
) -> QueryResult<()> {
    out.push_sql("(");
    out.push_bind_param::<Nullable<Text>, _>(run)?;
    out.push_sql("::text IS NULL OR EXISTS (SELECT 1 FROM active) OR (");
    out.push_bind_param::<Nullable<Text>, _>(&origin.owner)?;
    out.push_sql("::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runs WHERE id = ");
    out.push_bind_param::<Nullable<Text>, _>(run)?;
    out.push_sql(")))");
    Ok(())
}

/// The fields of a response record's JSON, as `jsonb_to_record` reads them (`created_at` in
/// seconds since the Unix epoch).
pub(super) const RESPONSE_FIELDS: &str = ") AS r (id text, created_at double precision, \
     model text, instructions text, previous_response_id text, temperature real, top_p real, \
     max_output_tokens integer, user_name text, metadata jsonb, text_format jsonb, \
     output_text text)";

/// Adds a turn that stored no messages to its caller's usage of the day: an upsert of one of
/// the caller-day's 64 rows, written by hand so that it has a static query id and stays prepared
/// (diesel's `on_conflict` builder has none, so it was prepared anew on every call). With a run,
/// completes it in the same statement, and counts nothing unless it is in progress (no row back).
#[derive(Debug)]
pub(super) struct CountUsage<'a> {
    pub(super) owner: &'a str,
    /// The agent of the turn ('' when none is named).
    pub(super) agent: &'a str,
    pub(super) day: chrono::NaiveDate,
    pub(super) shard: i16,
    pub(super) prompt_tokens: i64,
    pub(super) completion_tokens: i64,
    pub(super) run: Option<&'a str>,
    pub(super) output_text: Option<&'a str>,
    pub(super) origin: RunOrigin<'a>,
}

impl QueryId for CountUsage<'_> {
    type QueryId = CountUsage<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl Query for CountUsage<'_> {
    type SqlType = diesel::sql_types::Bool;
}

impl QueryFragment<Pg> for CountUsage<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH ");
        push_active_run(&mut out, &self.run)?;
        out.push_sql(
            ", finished AS (UPDATE runs SET status = 'completed', finished_at = now(), \
             lease_holder = NULL, lease_expires_at = NULL, output_text = ",
        );
        out.push_bind_param::<Nullable<Text>, _>(&self.output_text)?;
        out.push_sql(", prompt_tokens = ");
        out.push_bind_param::<BigInt, _>(&self.prompt_tokens)?;
        out.push_sql(", completion_tokens = ");
        out.push_bind_param::<BigInt, _>(&self.completion_tokens)?;
        out.push_sql(" WHERE runs.id IN (SELECT id FROM active)), ");
        push_run_insert(
            &mut out,
            &self.run,
            &self.origin,
            "NULL",
            "now()",
            (
                &self.output_text,
                &self.prompt_tokens,
                &self.completion_tokens,
            ),
        )?;
        out.push_sql(" WHERE ");
        out.push_bind_param::<Nullable<Text>, _>(&self.origin.owner)?;
        out.push_sql("::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM runs WHERE id = ");
        out.push_bind_param::<Nullable<Text>, _>(&self.run)?;
        out.push_sql(
            ") ON CONFLICT (id) DO NOTHING) INSERT INTO usage_daily AS u \
             (owner, day, agent, shard, turns, prompt_tokens, completion_tokens) SELECT ",
        );
        out.push_bind_param::<Text, _>(self.owner)?;
        out.push_sql(", ");
        out.push_bind_param::<diesel::sql_types::Date, _>(&self.day)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.agent)?;
        out.push_sql(", ");
        out.push_bind_param::<diesel::sql_types::SmallInt, _>(&self.shard)?;
        out.push_sql(", 1, ");
        out.push_bind_param::<BigInt, _>(&self.prompt_tokens)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.completion_tokens)?;
        out.push_sql(" WHERE ");
        push_run_still_active(&mut out, &self.run, &self.origin)?;
        out.push_sql(
            " ON CONFLICT (owner, day, agent, shard) DO UPDATE SET turns = u.turns + 1, \
             prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens, \
             completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens RETURNING true",
        );
        Ok(())
    }
}
