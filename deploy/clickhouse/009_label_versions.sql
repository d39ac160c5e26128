-- 009: label versions. labels was a ReplacingMergeTree without a version
-- column: a background merge kept the last *inserted* row of a trace while
-- labels_latest picked the newest by ts, so a label could change value after
-- a merge (correct = 1 at 05:00 inserted before correct = 0 at 04:00 read 1,
-- and 0 after OPTIMIZE), and two labels with one ts (a POST body without ts
-- gets one receipt time) were decided by whichever row a merge kept. The
-- table is replaced by one whose merges keep what the view picks:
--   version = (ts in ms) * 2^21 + seq * 2 + correct
-- seq is the label's position in its insert (a message, file or POST body;
-- 0 .. 2^20 - 1, written by entrowatch, 0 in the DEFAULT for other
-- writers). The newest ts wins; at an equal ts the later label of one
-- insert; then correct = 1. ReplacingMergeTree(version) keeps the row with
-- the largest version, the row labels_latest picks with argMax(.., version).
-- The new table is put in place first and the old rows copied into it after
-- (seq 0), so a label written during the migration lands in the new table
-- or in the old one before the copy. version has a DEFAULT, so INSERTs that
-- list the label.v1 columns only keep working.
DROP TABLE IF EXISTS {db}.labels_latest;

CREATE TABLE IF NOT EXISTS {db}.labels_versioned (
    trace_id String,
    correct UInt8,
    source String,
    ts DateTime('UTC'),
    ts_ms UInt16,
    inserted_at DateTime('UTC') DEFAULT now(),
    version UInt64 DEFAULT (toUInt64(ts) * 1000 + ts_ms) * 2097152 + correct
) ENGINE = ReplacingMergeTree(version)
ORDER BY trace_id;

RENAME TABLE {db}.labels TO {db}.labels_unversioned, {db}.labels_versioned TO {db}.labels;

INSERT INTO {db}.labels (trace_id, correct, source, ts, ts_ms, inserted_at, version)
SELECT trace_id, correct, source, ts, ts_ms, inserted_at, (toUInt64(ts) * 1000 + ts_ms) * 2097152 + correct
FROM {db}.labels_unversioned;

DROP TABLE IF EXISTS {db}.labels_unversioned;

-- labels_latest: one label per trace, the one with the largest version (the
-- newest by ts; see above for ties).
CREATE VIEW IF NOT EXISTS {db}.labels_latest AS
SELECT
    trace_id,
    argMax(correct, version) AS correct,
    argMax(source, version) AS source,
    max(ts) AS labelled_at
FROM {db}.labels
GROUP BY trace_id;
