//! The session core: everything pgshim knows about one client's conversation
//! with Postgres, and every decision about a message, in one owner with no
//! I/O, no locks and no atomics.
//!
//! The socket code ([`super::relay`]) frames messages and asks the core what
//! to do with each: client messages are forwarded, or replaced (a rewrite, a
//! stand-in for a refusal, hidden messages of pgshim's own in front); server
//! messages are forwarded, replaced (pgshim's error for a refusal) or
//! swallowed (replies to pgshim's own messages). Messages the core has no
//! interest in are framed by header only and reported with
//! [`Core::client_passed`] / [`Core::server_passed`], so the hot path copies
//! and allocates nothing.
//!
//! Replies are matched to requests by position: each Query, Sync and
//! FunctionCall is answered by one ReadyForQuery, numbered in
//! [`pipeline::Pipeline`]; within one pipeline the n-th CloseComplete answers
//! the n-th Close. Postgres skips everything after an error up to the next
//! Sync, so whatever a pipeline left unanswered is settled at its
//! ReadyForQuery.
mod pipeline;
mod position;
mod prepared;
mod refusals;
mod rewriting;
mod search;
mod shape;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};

pub(crate) use pipeline::Activity;
pub(crate) use rewriting::{SessionRules, StatementOutcome, Tally};

use crate::protocol::backend::{
    strip_channel_binding, BIND_COMPLETE_TAG, CLOSE_COMPLETE_TAG, COMMAND_COMPLETE_TAG,
    NO_DATA_TAG, PARAMETER_DESCRIPTION_TAG, PARSE_COMPLETE_TAG, ROW_DESCRIPTION_TAG,
};
use crate::protocol::frontend::{
    bind_portal, bind_statement, parse_body, portal_target, query_sql, statement_target,
    write_close_statement, write_describe_statement, write_flush, write_parse, write_query,
    write_run_named, ParseBody, BIND_TAG, CLOSE_TAG, DESCRIBE_TAG, PARSE_TAG, RUN_READIES,
};
use crate::protocol::{
    AUTHENTICATION_TAG, ERROR_RESPONSE_TAG, PASSWORD_TAG, QUERY_TAG, READY_FOR_QUERY_TAG, SYNC_TAG,
    TERMINATE_TAG,
};
use crate::rewrite::{
    prepared_statement_name, search_path_after, starts_with_prepare, Outcome, RefusalKind,
    RewriteError, SearchPath, Shape, Usage,
};
use pipeline::Pipeline;
use position::Positions;
use prepared::{deallocated, Deallocated, Hidden, Prepared, SentCounter, SqlPrepared, Statements};
use refusals::{Refusals, StatementError};
use rewriting::Rewrite;
use search::Probe;
use shape::{Describes, ShapeCheck, Verdict};

/// What to send for one statement text pgshim did not forward as it is.
enum Sql {
    /// The rewrite.
    Rewritten(Vec<u8>),
    /// A stand-in that Postgres fails, for a refused statement.
    StandIn(Vec<u8>),
    /// Refused because pgshim's parser does not accept it: Postgres judges
    /// the text first, so a typo gets Postgres's own error, and pgshim's
    /// refusal comes only if Postgres accepts the text.
    Judged(StatementError),
}

/// What to do with a message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToServer {
    /// Forward it as it is.
    Forward,
    /// Send these bytes instead.
    Send(BytesMut),
    /// Send these bytes (pgshim's own messages, ending in a Flush), then wait
    /// until [`Core::verdict_ready`] before asking [`Core::after_check`] what
    /// to do with the held message.
    SendAndCheck(BytesMut),
}

/// What to do with a message from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ToClient {
    /// Forward it as it is.
    Forward,
    /// Send these bytes instead.
    Send(Bytes),
    /// Drop it: it answers one of pgshim's own messages.
    Swallow,
}

/// What a client message before authentication may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthStep {
    /// An authentication response: relay it.
    Relay,
    /// Terminate: relay it and end the session.
    Terminate,
    /// Anything else waits, unread, until Postgres accepts the login.
    Hold,
}

/// All protocol state of one session.
#[derive(Default)]
pub(crate) struct Core {
    pipeline: Pipeline,
    /// The rules in force for this session; `None` until authenticated.
    rules: Option<SessionRules>,
    statements: Statements,
    /// SQL-level prepared statements (`PREPARE name AS ...`), by name.
    sql_prepared: BTreeMap<String, SqlPrepared>,
    sent: SentCounter,
    hidden: Hidden,
    refusals: Refusals,
    describes: Describes,
    positions: Positions,
    check: Option<ShapeCheck>,
    /// The pipeline in which the server last sent an ErrorResponse: it
    /// skips everything else in it.
    failed: Option<u64>,
    /// How unqualified table names resolve in this session.
    search_path: SearchPath,
    /// The search path may have changed: ask Postgres before the next
    /// statement is rewritten.
    probe_due: bool,
    /// A statement that may change the search path ran inside a transaction
    /// block: the path is asked again when the block ends.
    path_changed_in_tx: bool,
    /// The hidden query reading the search path, while it is answered.
    probe: Option<Probe>,
    /// A statement that may change the search path was just passed (a
    /// simple query, or the Sync behind an extended-protocol one): the socket
    /// code stops there until it is answered and the path is read.
    settle: bool,
    /// An extended-protocol statement that may change the search path was
    /// parsed or bound with nothing before it unanswered: the Sync that ends
    /// its pipeline settles, as a simple query does.
    settle_at_sync: bool,
    /// The unnamed statement's text, when it may change the search path:
    /// each Bind runs it again.
    unnamed_path_changer: Option<Bytes>,
    /// The search path changed while SQL-level prepared statements exist:
    /// Postgres analyses them again under the new path, so pgshim prepares
    /// them again, rewritten for it, once the session is idle.
    sql_reprepare_due: bool,
    /// The client sent DDL naming a mapped table: the catalog is read afresh
    /// once the session is idle again (the DDL has run, or rolled back).
    ddl_sent: bool,
    /// Postgres reported a mapped column missing (`42703`): the catalog held
    /// is likely out of date (a column dropped by DDL that pgshim has not
    /// seen yet), so it is read afresh now rather than at the next periodic
    /// comparison, and the statements behind stop naming the column.
    catalog_suspect: bool,
    /// Mapped tables whose columns a statement sent in the transaction under
    /// way changes (`ALTER TABLE`, `CREATE`/`DROP TABLE`): until it ends, the
    /// columns pgshim holds for them may not be the ones Postgres sees.
    changed_in_tx: Vec<String>,
    /// Counts for metrics, published by the socket code.
    pub(crate) tally: Tally,
}

// === impl Core ===

impl Core {
    /// Where the session is in its life.
    pub(crate) fn activity(&self) -> Activity {
        self.pipeline.activity()
    }

    /// True once Postgres has accepted the login and sent ReadyForQuery.
    pub(crate) fn authenticated(&self) -> bool {
        self.pipeline.authenticated()
    }

    /// Transaction status from the last ReadyForQuery.
    #[cfg(test)]
    pub(crate) fn tx_status(&self) -> Option<crate::protocol::TxStatus> {
        self.pipeline.tx_status()
    }

    /// Requests sent and not yet answered.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        self.pipeline.in_flight()
    }

    /// Decides about a client message (by tag) before authentication. Only
    /// authentication responses and Terminate go to Postgres then, as
    /// Postgres reads nothing else before it has accepted the login.
    /// A relayed message is then reported with [`Core::client_passed`].
    pub(crate) fn auth_step(&self, tag: u8) -> AuthStep {
        match tag {
            PASSWORD_TAG => AuthStep::Relay,
            TERMINATE_TAG => AuthStep::Terminate,
            _ => AuthStep::Hold,
        }
    }

    // --- rules ---

    /// The number of the rules version in force for the session.
    pub(crate) fn rules_number(&self) -> Option<u64> {
        self.rules.as_ref().map(|r| r.number)
    }

    /// The rules in force for the session.
    pub(crate) fn rules(&self) -> Option<&SessionRules> {
        self.rules.as_ref()
    }

    /// True when the session is idle, so it may take new rules.
    pub(crate) fn idle(&self) -> bool {
        self.activity() == Activity::Idle && self.check.is_none() && self.probe.is_none()
    }

    /// The hidden query that reads the search path, when it is due and
    /// nothing else is in flight; the socket code sends it and waits for
    /// [`Core::probed`] before handing over more client messages.
    pub(crate) fn probe_now(&mut self) -> Option<BytesMut> {
        let rules = self.rules.as_ref().filter(|r| r.active())?;
        let ready = self.probe_due
            && self.probe.is_none()
            && self.check.is_none()
            && self.pipeline.quiet()
            && !self.hidden.queries_pending()
            && self.pipeline.tx_status() != Some(crate::protocol::TxStatus::Failed);
        if !ready {
            return None;
        }
        self.probe_due = false;
        self.probe = Some(Probe::default());
        Some(search::probe_query(rules.rules()))
    }

    /// True when no probe of the search path is being answered.
    pub(crate) fn probed(&self) -> bool {
        self.probe.is_none()
    }

    /// True once a statement that may change the search path was passed
    /// (reset by the call): the socket code waits until it is answered.
    pub(crate) fn take_settle(&mut self) -> bool {
        std::mem::take(&mut self.settle)
    }

    /// True when every request sent has been answered.
    pub(crate) fn settled(&self) -> bool {
        self.pipeline.in_flight() == 0
    }

    /// Whether Postgres reported a mapped column missing since the last call.
    pub(crate) fn take_catalog_suspect(&mut self) -> bool {
        std::mem::take(&mut self.catalog_suspect)
    }

    /// Whether DDL naming a mapped table was sent and not yet reported by
    /// [`Core::take_ddl_sent`].
    pub(crate) fn ddl_pending(&self) -> bool {
        self.ddl_sent
    }

    /// Whether DDL naming a mapped table was sent since the last call.
    /// Called when the session is idle: the transaction that ran it is over.
    pub(crate) fn take_ddl_sent(&mut self) -> bool {
        self.changed_in_tx.clear();
        std::mem::take(&mut self.ddl_sent)
    }

    /// Simple queries that prepare the SQL-level prepared statements again
    /// for a search path that changed, once the session is idle (hidden
    /// statements inside the client's transaction block could abort it).
    pub(crate) fn take_path_reprepare(&mut self) -> Option<BytesMut> {
        if !self.sql_reprepare_due || !self.idle() {
            return None;
        }
        self.sql_reprepare_due = false;
        self.reprepare_sql()
    }

    /// Puts `rules` in force. Statements prepared under older rules are
    /// prepared again before their next use.
    ///
    /// # Returns
    /// Simple queries to send first, re-preparing SQL-level prepared
    /// statements under the new rules (their replies are swallowed).
    pub(crate) fn take_rules(&mut self, rules: SessionRules) -> Option<BytesMut> {
        let first = self.rules.is_none();
        if let Some(old) = &self.rules {
            tracing::debug!(
                from = old.number,
                to = rules.number,
                "session takes new rules"
            );
        }
        // New rules may map other names: read the path and temporary tables again.
        self.probe_due = rules.active();
        self.rules = Some(rules);
        if first {
            return None;
        }
        self.statements.mark_all_stale();
        self.reprepare_sql()
    }

    /// `DEALLOCATE name`, then `PREPARE name AS <new rewrite>`, for every
    /// SQL-level prepared statement, each run on its own (one failure cannot
    /// skip the others) as a named statement: a `Query` would drop the
    /// client's unnamed statement.
    fn reprepare_sql(&mut self) -> Option<BytesMut> {
        let rules = self.rules.as_ref()?;
        if self.sql_prepared.is_empty() {
            return None;
        }
        let mut out = BytesMut::new();
        let mut runs = 0;
        for prepared in self.sql_prepared.values() {
            let text = match rules.rewrite_text(
                prepared.text.as_bytes(),
                &self.search_path,
                &mut self.tally,
            ) {
                Ok(Outcome::Unchanged) => prepared.text.clone(),
                Ok(Outcome::Rewritten(new)) => new,
                Err(e) => {
                    tracing::warn!(statement = %prepared.quoted_name, error = %e, "SQL prepared statement cannot be rewritten under the new rules; deallocating it");
                    String::new()
                }
            };
            let deallocate = format!("DEALLOCATE {}", prepared.quoted_name);
            write_run_named(&mut out, HIDDEN_RUN, deallocate.as_bytes());
            runs += RUN_READIES;
            if !text.is_empty() {
                write_run_named(&mut out, HIDDEN_RUN, text.as_bytes());
                runs += RUN_READIES;
            }
            self.tally.reprepared += 1;
        }
        self.hidden.add_queries(runs);
        Some(out)
    }

    // --- client to server ---

    /// Whether a client message with `tag` must be given whole to
    /// [`Core::client_message`]; others go to [`Core::client_passed`].
    pub(crate) fn client_wants_whole(&self, tag: u8) -> bool {
        let active = self
            .rules
            .as_ref()
            .is_some_and(|r| r.active() || r.has_left_out());
        match tag {
            PARSE_TAG => true,
            QUERY_TAG => active || !self.statements.is_empty(),
            CLOSE_TAG => !self.statements.is_empty(),
            BIND_TAG => {
                self.statements.any_stale()
                    || self.statements.any_changed()
                    || self.statements.any_usage()
                    || self.statements.any_changes_path()
                    || self.statements.any_unshaped()
                    || self.unnamed_path_changer.is_some()
            }
            // Every Describe of a statement is answered by a
            // ParameterDescription, which places the descriptions that follow.
            DESCRIBE_TAG => self.rules.is_some(),
            _ => false,
        }
    }

    /// Notes a client message forwarded as it is.
    pub(crate) fn client_passed(&mut self, tag: u8) {
        match tag {
            QUERY_TAG => self.tally.count(StatementOutcome::PassedThrough),
            SYNC_TAG => self.settle |= std::mem::take(&mut self.settle_at_sync),
            BIND_TAG => self.describes.forget_portals(),
            _ => {}
        }
        self.sent.on_sent(self.pipeline.next_request(), tag);
        self.pipeline.on_frontend(tag);
    }

    /// Decides about a whole client message.
    pub(crate) fn client_message(&mut self, msg: &[u8]) -> ToServer {
        let Some(&tag) = msg.first() else {
            return ToServer::Forward;
        };
        let pipeline = self.pipeline.next_request();
        self.sent.on_sent(pipeline, tag);
        let action = match tag {
            QUERY_TAG => self.query(msg),
            PARSE_TAG => self.parse(msg),
            BIND_TAG => match bind_statement(msg) {
                Some(name) => {
                    if let Some(portal) = bind_portal(msg) {
                        let wanted = self.statements.wants_shape(name);
                        self.describes.bound(portal, name, wanted);
                    }
                    let changer = if name.is_empty() {
                        self.unnamed_path_changer.clone()
                    } else {
                        self.statements.path_changer(name)
                    };
                    if let Some(sql) = changer {
                        self.path_may_change();
                        self.settle_at_sync |= self.pipeline.in_flight() == 0;
                        self.predict_path(&sql);
                    }
                    let action = self.before_use(name, msg);
                    if let Some(usage) = self.statements.usage(name) {
                        self.tally.usage.push(usage.clone());
                    }
                    action
                }
                None => ToServer::Forward,
            },
            DESCRIBE_TAG => match statement_target(msg) {
                Some(name) => {
                    let action = self.before_use(name, msg);
                    self.describes
                        .expect(pipeline, Bytes::copy_from_slice(name));
                    action
                }
                None => {
                    // Shapes matter where statements are rewritten; rules
                    // change only when the session is idle, so no pipeline
                    // has portal Describes both noted and not.
                    let active = self.rules.as_ref().is_some_and(SessionRules::active);
                    if let Some(portal) = portal_target(msg).filter(|_| active) {
                        self.describes.expect_portal(pipeline, portal);
                    }
                    ToServer::Forward
                }
            },
            CLOSE_TAG => {
                if let Some(name) = statement_target(msg) {
                    self.statements.remove(name);
                }
                ToServer::Forward
            }
            _ => ToServer::Forward,
        };
        self.pipeline.on_frontend(tag);
        action
    }

    /// A statement that may change the search path is on its way: the path
    /// is read again before the next statement is rewritten, and again when
    /// its transaction ends.
    fn path_may_change(&mut self) {
        self.probe_due = true;
        self.path_changed_in_tx = true;
    }

    /// Whether statement text `sql` may change the search path, in a session
    /// that follows it (one with rules in force).
    fn may_change_path(&self, sql: &[u8]) -> bool {
        self.rules.as_ref().is_some_and(SessionRules::active) && search::may_change_path(sql)
    }

    /// What to send for statement text `sql`, or `None` to send it as it
    /// is; refusals become a stand-in statement that Postgres fails in the
    /// same place. Also says which shapes of the rules the statement uses.
    fn rewrite(&mut self, sql: &[u8]) -> (Option<Sql>, Usage) {
        let Some(rules) = &self.rules else {
            // Unreachable through the socket code, which hands nothing over
            // before authentication; refused rather than passed, to be safe.
            let token = self
                .refusals
                .push(self.pipeline.next_request(), &StatementError::NoRules);
            return (Some(Sql::StandIn(token.into_bytes())), Usage::default());
        };
        let (mut decision, usage) = rules.rewrite(sql, &self.search_path, &mut self.tally);
        if !self.changed_in_tx.is_empty() && matches!(decision, Rewrite::Keep | Rewrite::Replace(_))
        {
            // The columns pgshim holds are those from before DDL that this
            // transaction ran: a `*` or positional INSERT resolved with them
            // could miss a column the transaction added. Postgres sees the
            // change; the catalog is read afresh once the transaction is over.
            let changed = |id: &str| {
                rules
                    .rules()
                    .rules()
                    .iter()
                    .any(|r| r.id == id && self.changed_in_tx.contains(&r.table))
            };
            if let Some((rule, _)) = usage
                .iter()
                .find(|(id, shape)| *shape == Shape::Star && changed(id))
            {
                decision = Rewrite::Refuse(RewriteError {
                    rule_id: rule.to_owned(),
                    reason: "`*` or an INSERT without a column list on a table whose columns DDL changed earlier in this transaction; name the columns, or run it after the transaction".into(),
                    kind: RefusalKind::Unrewritable,
                });
            }
        }
        if decision == Rewrite::Unmapped && rules.mentions_left_out(sql) && is_ddl(sql) {
            // DDL that may create the table of a rule left out here.
            self.ddl_sent = true;
        }
        if decision != Rewrite::Unmapped {
            // DDL naming a mapped table: the catalog is read afresh once it has run.
            if is_ddl(sql) {
                self.ddl_sent = true;
                if let Ok(sql) = std::str::from_utf8(sql) {
                    let changed = crate::rewrite::changed_mapped_tables(sql, rules.rules());
                    self.changed_in_tx.extend(changed);
                }
            }
        }
        let sql = match decision {
            Rewrite::Unmapped | Rewrite::Keep => None,
            Rewrite::Replace(new) => Some(Sql::Rewritten(new.into_bytes())),
            Rewrite::Refuse(e) if e.kind == RefusalKind::Unparsed => {
                Some(Sql::Judged(StatementError::Refused(e)))
            }
            Rewrite::Refuse(e) => {
                let token = self
                    .refusals
                    .push(self.pipeline.next_request(), &StatementError::Refused(e));
                Some(Sql::StandIn(token.into_bytes()))
            }
        };
        (sql, usage)
    }

    /// Counts one run of a statement that used `usage`.
    fn count_usage(&mut self, usage: Usage) {
        if !usage.is_empty() {
            self.tally.usage.push(usage);
        }
    }

    /// A stand-in for a statement refused because pgshim's parser does not
    /// accept it.
    fn stand_in(&mut self, error: &StatementError) -> Vec<u8> {
        let request = self.pipeline.next_request();
        self.refusals.push(request, error).into_bytes()
    }

    fn query(&mut self, msg: &[u8]) -> ToServer {
        let Some(sql) = query_sql(msg) else {
            return ToServer::Forward;
        };
        if !self.statements.is_empty() || !self.sql_prepared.is_empty() {
            for forget in deallocated(sql) {
                match forget {
                    Deallocated::All => {
                        self.statements.clear();
                        self.sql_prepared.clear();
                    }
                    Deallocated::Name(name) => {
                        self.statements.remove(name.as_bytes());
                        self.sql_prepared.remove(&name);
                    }
                }
            }
        }
        self.remember_sql_prepare(sql);
        // Pipelined behind nothing, the query's answer is sure to come: the
        // statements behind it wait for it and for the path it leaves.
        let quiet = self.pipeline.quiet();
        if self.may_change_path(sql) {
            self.path_may_change();
        }
        let (rewritten, usage) = self.rewrite(sql);
        self.settle = self.probe_due && quiet;
        self.count_usage(usage);
        let new_sql = match rewritten {
            None => return ToServer::Forward,
            Some(Sql::Rewritten(text)) => {
                let pipeline = self.pipeline.next_request();
                self.positions.query_sent(pipeline, sql, &text);
                text
            }
            Some(Sql::StandIn(text)) => text,
            // Postgres reads the whole text before running any of it: a
            // syntax error of its own comes back, or else the failing prefix
            // stops everything and pgshim refuses the statement.
            Some(Sql::Judged(error)) => {
                self.refusals
                    .push_judged(self.pipeline.next_request(), &error, sql)
            }
        };
        let mut out = BytesMut::with_capacity(new_sql.len() + 6);
        write_query(&mut out, &new_sql);
        ToServer::Send(out)
    }

    /// Remembers a simple query that is exactly one `PREPARE name AS ...`.
    fn remember_sql_prepare(&mut self, sql: &[u8]) {
        if !starts_with_prepare(sql) {
            return;
        }
        let Ok(text) = std::str::from_utf8(sql) else {
            return;
        };
        let Some(key) = prepared_statement_name(text) else {
            return;
        };
        let quoted_name = format!("\"{}\"", key.replace('"', "\"\""));
        let text = text
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
            .to_owned();
        self.sql_prepared
            .insert(key, SqlPrepared { quoted_name, text });
    }

    fn parse(&mut self, msg: &[u8]) -> ToServer {
        let Some(body) = parse_body(msg) else {
            return ToServer::Forward;
        };
        let changes_path = self.may_change_path(body.sql);
        if changes_path {
            self.path_may_change();
            // Postgres runs it at an Execute before the Sync; the statements
            // behind that Sync wait for it as they do behind a simple query.
            self.settle_at_sync |= self.pipeline.in_flight() == 0;
        }
        if body.name.is_empty() {
            self.unnamed_path_changer = changes_path.then(|| Bytes::copy_from_slice(body.sql));
        }
        let (rewritten, usage) = self.rewrite(body.sql);
        let pipeline = self.pipeline.next_request();
        let kept = match &rewritten {
            Some(Sql::Rewritten(text)) => Some((body.sql, text.as_slice())),
            _ => None,
        };
        self.positions.parse_sent(pipeline, kept);
        let mut out = BytesMut::new();
        let new_sql = match rewritten {
            None => None,
            Some(Sql::Rewritten(text) | Sql::StandIn(text)) => Some(text),
            Some(Sql::Judged(error)) => {
                // Postgres parses and analyses the statement first, under a
                // name of pgshim's (the client's unnamed statement stays),
                // closed at once: its own error reaches the client, and if it
                // has none, the stand-in behind it fails and pgshim refuses
                // the statement.
                let pipeline = self.pipeline.next_request();
                self.hidden.expect_check(&mut self.sent, pipeline);
                let judged = ParseBody {
                    name: HIDDEN_RUN,
                    ..body
                };
                write_parse(&mut out, &judged, body.sql);
                write_close_statement(&mut out, HIDDEN_RUN);
                Some(self.stand_in(&error))
            }
        };
        if !body.name.is_empty() {
            let sql = Bytes::copy_from_slice(body.sql);
            // Sent as written: one copy serves both.
            let sent = new_sql
                .as_deref()
                .map_or_else(|| sql.clone(), Bytes::copy_from_slice);
            let prepared = Prepared {
                sql,
                param_types: Bytes::copy_from_slice(body.param_types),
                sent,
                described: None,
                shape_wanted: new_sql.is_some() || !usage.is_empty(),
                result_changed: false,
                changes_path,
                usage,
            };
            self.statements
                .insert(Bytes::copy_from_slice(body.name), prepared);
        } else {
            // The unnamed statement runs once, right after.
            self.count_usage(usage);
        }
        let Some(new_sql) = new_sql else {
            return ToServer::Forward;
        };
        write_parse(&mut out, &body, &new_sql);
        ToServer::Send(out)
    }

    /// Before a Bind or Describe of statement `name`: a statement whose result
    /// changed under new rules fails as Postgres fails it, and one prepared
    /// under older rules is prepared again (hidden Close and Parse) if its
    /// rewrite changed.
    fn before_use(&mut self, name: &[u8], msg: &[u8]) -> ToServer {
        if msg.first() == Some(&BIND_TAG) && self.statements.result_changed(name) {
            return self.fail_result_changed(name);
        }
        let pipeline = self.pipeline.next_request();
        let Some(prepared) = self.statements.take_stale(name).cloned() else {
            return ToServer::Forward;
        };
        let (rewritten, usage) = self.rewrite(&prepared.sql);
        let new_sql = match rewritten {
            None => prepared.sql.to_vec(),
            Some(Sql::Rewritten(text) | Sql::StandIn(text)) => text,
            Some(Sql::Judged(error)) => self.stand_in(&error),
        };
        if new_sql == prepared.sent {
            return ToServer::Forward;
        }
        let name = Bytes::copy_from_slice(name);
        let parse = self
            .hidden
            .expect_reprepare(&mut self.sent, pipeline, name.clone());
        let mut out = BytesMut::with_capacity(msg.len() + new_sql.len() + name.len() * 3 + 48);
        write_close_statement(&mut out, &name);
        let body = ParseBody {
            name: &name,
            sql: &prepared.sql,
            param_types: &prepared.param_types,
        };
        write_parse(&mut out, &body, &new_sql);
        self.tally.reprepared += 1;
        tracing::debug!(
            version = self.rules_number(),
            "prepared statement prepared again under new rules"
        );
        // A client that was shown the statement's result columns must not
        // get rows of another shape: check the new description first, as
        // Postgres does when a cached plan is revalidated.
        let check = match &prepared.described {
            Some(shown) if msg.first() == Some(&BIND_TAG) && self.failed != Some(pipeline) => {
                Some(ShapeCheck::new(
                    pipeline,
                    parse,
                    name.clone(),
                    shown.clone(),
                    Bytes::copy_from_slice(msg),
                ))
            }
            _ => None,
        };
        self.statements.insert(
            name.clone(),
            Prepared {
                shape_wanted: prepared.shape_wanted || new_sql != prepared.sql,
                sent: Bytes::from(new_sql),
                usage,
                ..prepared
            },
        );
        match check {
            Some(check) => {
                write_describe_statement(&mut out, &name);
                write_flush(&mut out);
                self.check = Some(check);
                ToServer::SendAndCheck(out)
            }
            None => {
                out.extend_from_slice(msg);
                ToServer::Send(out)
            }
        }
    }

    /// True while a check started by [`ToServer::SendAndCheck`] is open.
    #[cfg(test)]
    pub(crate) fn checking(&self) -> bool {
        self.check.is_some()
    }

    /// True when the check started by [`ToServer::SendAndCheck`] has its answer.
    pub(crate) fn verdict_ready(&self) -> bool {
        self.check.as_ref().is_none_or(ShapeCheck::ready)
    }

    /// What to send for the message held by [`ToServer::SendAndCheck`], once
    /// [`Core::verdict_ready`] (or after giving up waiting).
    pub(crate) fn after_check(&mut self) -> ToServer {
        let Some(check) = &mut self.check else {
            return ToServer::Forward;
        };
        let (name, held, verdict) = check.take();
        if verdict != Verdict::Pending {
            self.check = None;
        }
        // Without a verdict in time the check stays, so the hidden replies
        // are still swallowed when they come.
        let Some(held) = held else {
            return ToServer::Forward;
        };
        match verdict {
            Verdict::Changed => {
                self.statements.set_result_changed(&name);
                self.fail_result_changed(&name)
            }
            Verdict::Same | Verdict::Skipped | Verdict::Pending => {
                ToServer::Send(BytesMut::from(&held[..]))
            }
        }
    }

    /// Replaces a Bind of a statement whose result changed by a stand-in
    /// Parse that Postgres fails, so the error comes back in its place.
    fn fail_result_changed(&mut self, name: &[u8]) -> ToServer {
        let error = StatementError::ResultChanged {
            statement: String::from_utf8_lossy(name).into_owned(),
        };
        let token = self.refusals.push(self.pipeline.next_request(), &error);
        let mut out = BytesMut::with_capacity(token.len() + 32);
        // Named: a Parse of the unnamed statement, even a failing one, drops
        // the client's.
        let body = ParseBody {
            name: HIDDEN_RUN,
            sql: b"",
            param_types: &[0, 0],
        };
        write_parse(&mut out, &body, token.as_bytes());
        ToServer::Send(out)
    }

    // --- server to client ---

    /// Whether a server message with `tag` must be given whole to
    /// [`Core::server_message`]; others go to [`Core::server_passed`].
    pub(crate) fn server_wants_whole(&self, tag: u8) -> bool {
        match tag {
            READY_FOR_QUERY_TAG => true,
            AUTHENTICATION_TAG => !self.authenticated(),
            _ if self.probe.is_some() && Probe::answers(tag) => true,
            // Also with rules in force, to see a mapped column reported
            // missing; errors are few, so reading them whole costs little.
            ERROR_RESPONSE_TAG => {
                self.refusals.any()
                    || self.hidden.queries_pending()
                    || self.check.is_some()
                    || self.rules.as_ref().is_some_and(SessionRules::active)
            }
            COMMAND_COMPLETE_TAG | BIND_COMPLETE_TAG => self.hidden.queries_pending(),
            PARSE_COMPLETE_TAG | CLOSE_COMPLETE_TAG => {
                self.hidden.any() || self.hidden.queries_pending()
            }
            PARAMETER_DESCRIPTION_TAG | ROW_DESCRIPTION_TAG | NO_DATA_TAG => {
                self.describes.any() || self.check.as_ref().is_some_and(ShapeCheck::describing)
            }
            _ => false,
        }
    }

    /// Notes a server message forwarded as it is.
    pub(crate) fn server_passed(&mut self, tag: u8) {
        self.pipeline.on_backend(tag);
        match tag {
            PARSE_COMPLETE_TAG | CLOSE_COMPLETE_TAG => {
                let pipeline = self.pipeline.next_ready();
                let hidden = self.hidden.on_reply(pipeline, tag).is_some();
                if tag == PARSE_COMPLETE_TAG && !hidden {
                    self.positions.parse_done(pipeline);
                }
            }
            ERROR_RESPONSE_TAG => self.failed = Some(self.pipeline.next_ready()),
            _ => {}
        }
    }

    /// Decides about a whole server message.
    pub(crate) fn server_message(&mut self, msg: &[u8]) -> ToClient {
        let Some(&tag) = msg.first() else {
            return ToClient::Forward;
        };
        if self.hidden.queries_pending() && is_query_reply(tag) {
            // A reply to pgshim's own re-PREPARE: never the client's.
            if tag == READY_FOR_QUERY_TAG {
                self.hidden.query_done();
            } else if tag == ERROR_RESPONSE_TAG {
                tracing::warn!(error = %String::from_utf8_lossy(msg), "re-preparing a SQL prepared statement under new rules failed");
            }
            return ToClient::Swallow;
        }
        if let Some(probe) = &mut self.probe {
            if Probe::answers(tag) {
                if let Some(done) = probe.on_server(msg) {
                    self.probe = None;
                    match done {
                        Some(path) => self.set_search_path(path),
                        // Asked again once the transaction is over.
                        None => self.path_changed_in_tx = true,
                    }
                }
                return ToClient::Swallow;
            }
        }
        if let Some(check) = &mut self.check {
            let ours = check.on_server(self.pipeline.next_ready(), msg);
            if check.finished() {
                self.check = None;
            }
            if ours {
                return ToClient::Swallow;
            }
        }
        match tag {
            READY_FOR_QUERY_TAG => {
                self.ready_for_query(msg);
                ToClient::Forward
            }
            ERROR_RESPONSE_TAG => {
                let ready = self.pipeline.next_ready();
                self.failed = Some(ready);
                self.catalog_suspect |= self.names_missing_mapped_column(msg);
                if let Some(ours) = self.refusals.replace(msg, ready) {
                    return ToClient::Send(ours);
                }
                self.position_in_client_text(ready, msg)
                    .map_or(ToClient::Forward, ToClient::Send)
            }
            PARSE_COMPLETE_TAG | CLOSE_COMPLETE_TAG => {
                let pipeline = self.pipeline.next_ready();
                let Some(ordinal) = self.hidden.on_reply(pipeline, tag) else {
                    if tag == PARSE_COMPLETE_TAG {
                        self.positions.parse_done(pipeline);
                    }
                    return ToClient::Forward;
                };
                if let (PARSE_COMPLETE_TAG, Some(check)) = (tag, &mut self.check) {
                    check.parsed(pipeline, ordinal);
                }
                ToClient::Swallow
            }
            PARAMETER_DESCRIPTION_TAG | ROW_DESCRIPTION_TAG | NO_DATA_TAG => {
                if let Some((name, shown)) =
                    self.describes.on_server(self.pipeline.next_ready(), msg)
                {
                    self.statements.set_described(&name, shown);
                }
                ToClient::Forward
            }
            _ => match strip_channel_binding(msg) {
                Some(edited) => ToClient::Send(edited.freeze()),
                None => ToClient::Forward,
            },
        }
    }

    /// `error`, of pipeline `pipeline`, with its position carried back into
    /// the client's text when it is about a statement pgshim rewrote.
    fn position_in_client_text(&self, pipeline: u64, error: &[u8]) -> Option<Bytes> {
        use crate::protocol::backend::{error_field, map_position};
        if !self.positions.any() {
            return None;
        }
        let position = std::str::from_utf8(error_field(error, b'P')?)
            .ok()?
            .parse::<usize>()
            .ok()?;
        let original = self.positions.original(pipeline, position)?;
        map_position(error, |_| original).map(BytesMut::freeze)
    }

    /// Whether `error` is Postgres's `42703` (undefined column) naming a
    /// column of the session's rules.
    fn names_missing_mapped_column(&self, error: &[u8]) -> bool {
        use crate::protocol::backend::error_field;
        let (Some(rules), Some(b"42703"), Some(message)) = (
            &self.rules,
            error_field(error, b'C'),
            error_field(error, b'M'),
        ) else {
            return false;
        };
        let message = String::from_utf8_lossy(message);
        rules.rules().rules().iter().any(|rule| {
            rule.old.iter().chain(&rule.new).any(|c| {
                message.contains(&format!("\"{c}\"")) || message.contains(&format!(".{c} "))
            })
        })
    }

    /// A statement that may change the search path, `sql`, is bound. When it
    /// is a `SET search_path` naming its schemas, the statements behind it in
    /// its pipeline are rewritten for the path it sets: Postgres runs it at
    /// the Execute behind this Bind and, should it fail, skips everything up
    /// to the Sync. The probe behind the Sync reads the path that holds.
    fn predict_path(&mut self, sql: &[u8]) {
        let Ok(text) = std::str::from_utf8(sql) else {
            return;
        };
        if let Some(path) = search_path_after(text, &self.search_path) {
            self.set_search_path(path);
        }
    }

    /// Takes the path a probe read. Postgres analyses a prepared statement
    /// again when the path it was prepared under is no longer the session's,
    /// resolving its names afresh: pgshim rewrites each again before its next
    /// use (a protocol-level statement) or once idle (an SQL-level one).
    fn set_search_path(&mut self, path: SearchPath) {
        if path.schemas() != self.search_path.schemas() {
            self.statements.mark_all_stale();
            self.sql_reprepare_due = !self.sql_prepared.is_empty();
        }
        self.search_path = path;
    }

    /// Ends a pipeline: what it left unanswered will never be answered.
    fn ready_for_query(&mut self, msg: &[u8]) {
        let pipeline = self.pipeline.next_ready();
        let first = self.pipeline.on_ready_for_query(msg.get(5).copied());
        if first {
            return;
        }
        // `SET LOCAL`, and anything rolled back, ends with its transaction.
        if self.path_changed_in_tx && self.activity() == Activity::Idle {
            self.path_changed_in_tx = false;
            self.probe_due = true;
        }
        if self.refusals.any() {
            self.refusals.expire(self.pipeline.readies());
        }
        self.describes.end_pipeline(pipeline);
        self.positions.end_pipeline(pipeline);
        for name in self.hidden.end_pipeline(pipeline) {
            self.statements.mark_stale(name);
        }
        if let Some(check) = &mut self.check {
            check.end_pipeline(pipeline);
            if check.finished() {
                self.check = None;
            }
        }
    }
}

/// Replies to pgshim's own named runs (`write_run_named`) of statements that
/// return no rows, which pgshim swallows.
fn is_query_reply(tag: u8) -> bool {
    matches!(
        tag,
        PARSE_COMPLETE_TAG
            | BIND_COMPLETE_TAG
            | CLOSE_COMPLETE_TAG
            | COMMAND_COMPLETE_TAG
            | ERROR_RESPONSE_TAG
            | READY_FOR_QUERY_TAG
    )
}

/// Statement and portal name of pgshim's own runs of SQL. The colon keeps it
/// clear of the names drivers generate and of unquoted SQL names (`PREPARE`,
/// `DECLARE … CURSOR`), so it does not collide with a statement or cursor of
/// the client's.
const HIDDEN_RUN: &[u8] = b"pgshim:run";

/// Whether `sql` has the word `ALTER`, `DROP` or `CREATE` (any case): DDL that
/// can change a table's columns. Words inside literals count too, which only
/// costs a catalog read.
fn is_ddl(sql: &[u8]) -> bool {
    has_any_word(sql, &[b"alter", b"drop", b"create"])
}

/// Whether `sql` has one of `words` (any case) as a whole word, without
/// allocating.
fn has_any_word(sql: &[u8], words: &[&[u8]]) -> bool {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    sql.split(|b| !is_word(*b))
        .any(|w| words.iter().any(|t| w.eq_ignore_ascii_case(t)))
}
