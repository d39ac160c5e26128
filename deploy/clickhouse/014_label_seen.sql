-- 014: the labels each trace ever had, for labels import.
--
-- labels import skips a label without ts whose trace_id, correct and source
-- are stored already, so that importing a file again does not undo later
-- labels. It looked in labels, whose merges keep only the newest row of a
-- trace: after a merge an old file's labels were new again and undid the
-- correction made since. label_seen keeps one row per (trace_id, source,
-- correct), filled by a materialized view on every insert into labels (by
-- any path: import, the labels topic, POST /v1/labels) and here from the
-- labels stored so far.

CREATE TABLE IF NOT EXISTS {db}.label_seen (
    trace_id String,
    source String,
    correct UInt8
) ENGINE = ReplacingMergeTree
ORDER BY (trace_id, source, correct);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.label_seen_mv TO {db}.label_seen AS
SELECT trace_id, source, correct FROM {db}.labels;

INSERT INTO {db}.label_seen (trace_id, source, correct)
SELECT trace_id, source, correct FROM {db}.labels;
