-- TPC-B-like read-write transaction on pgbench_accounts, NEW shape (balance).
-- Used by bench/rules.sh; the rewritten baselines are derived from it.
\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET balance = balance + :delta WHERE aid = :aid;
SELECT balance FROM pgbench_accounts WHERE aid = :aid;
END;
