-- 013: labels that estimate without bias, and status_counts' "future".
--
-- labeling_candidates took the most uncertain responses (p nearest 0.5)
-- first within each p_correct stratum. accuracy_corrected treats the labels
-- of a bin as a random sample of it, and they were not: on tinylm-large
-- count_char the labelled rows' mean p was 0.265 against 0.243 for their
-- bin, and the corrected estimate's interval missed the truth (7 of 16
-- domains beyond 2 se). Candidates are now in a fixed pseudo-random order
-- within each stratum (cityHash64 of the trace id: the same list on every
-- read, no order by p), so the labels of a bin are a random sample of its
-- open responses. uncertainty stays as a column.
--
-- status_counts took "future" as after newest, which only valid responses
-- define: when new traffic is all rejected (an upstream change), it all
-- showed as future and none as current. The day now ends at the newest row
-- of any status not later than now() + 5 minutes (the bound newest uses),
-- and only rows after that are future; first_ts and last_ts are over the
-- day's rows (NULL when a group has none).
DROP TABLE IF EXISTS {db}.labeling_candidates;

DROP TABLE IF EXISTS {db}.status_counts;

-- labeling_candidates: per queued domain, the responses to label next: open
-- ones only, stratified into five p_correct strata (0-0.2, ..., 0.8-1), in a
-- fixed pseudo-random order within a stratum (stratum_rank); taking rows in
-- (stratum_rank, stratum) order interleaves the strata.
CREATE VIEW IF NOT EXISTS {db}.labeling_candidates AS
SELECT model, domain, priority, stratum, stratum_rank, trace_id, p_correct, uncertainty, ts, prompt
FROM
(
    SELECT model, domain, stratum, stratum_rank,
        c.1 AS trace_id, c.2 AS uncertainty, c.3 AS p_correct, c.4 AS ts, c.5 AS prompt
    FROM
    (
        SELECT model, domain, stratum,
            arraySort(x -> (cityHash64(x.1), x.1), groupArray((trace_id, abs(p_correct - 0.5), p_correct, ts, prompt))) AS cs
        FROM
        (
            SELECT model, domain, trace_id, p_correct, ts, prompt, least(toUInt8(floor(p_correct * 5)), 4) AS stratum
            FROM {db}.label_status
            WHERE labelled = 0 AND requested = 0
        )
        GROUP BY model, domain, stratum
    )
    ARRAY JOIN cs AS c, arrayEnumerate(cs) AS stratum_rank
) AS cand
ALL INNER JOIN (SELECT model, domain, priority FROM {db}.labeling_queue) AS q USING model, domain
ORDER BY priority DESC, model, domain, stratum_rank, stratum, trace_id;

-- status_counts: the rows of the trailing day per model x domain x status;
-- the day ends at the newest row of any status not later than now() + 300 s
-- (the server clock when there is none); later rows are counted in future.
CREATE VIEW IF NOT EXISTS {db}.status_counts AS
SELECT
    model, domain, status,
    countIf(t <= end_ts) AS n,
    countIf(t > end_ts) AS future,
    if(n > 0, toDateTime(minIf(t, t <= end_ts), 'UTC'), NULL) AS first_ts,
    if(n > 0, toDateTime(maxIf(t, t <= end_ts), 'UTC'), NULL) AS last_ts
FROM
(
    SELECT model, ifNull(domain, ifNull(cluster_label, '')) AS domain, status, toUInt32(ts) AS t, end_ts
    FROM {db}.scored FINAL
    CROSS JOIN
    (
        SELECT if(count() = 0, toUInt32(now()), toUInt32(max(ts))) AS end_ts
        FROM {db}.scored
        WHERE ts <= now() + 300
    ) AS day_end
    WHERE t + 86400 > end_ts
)
GROUP BY model, domain, status
ORDER BY model, domain, status = 'ok', n DESC;
