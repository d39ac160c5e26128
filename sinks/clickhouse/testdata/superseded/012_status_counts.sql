-- 012: status_counts, what the stream could not estimate.
--
-- The accuracy views read scored_ok (status = 'ok' rows with an estimate),
-- so responses that were rejected (positive_logprob, too_long, ...) or not
-- estimated (unknown_model, bad_feature) were visible only by querying
-- scored by hand. status_counts counts the rows of the trailing day ending at
-- newest per model x domain x status, and the rows dated after newest (a
-- client clock ahead, or created in the wrong unit: the views ignore them)
-- in the column future. Before any valid response (newest is 0) the day ends
-- at the server clock. Traces are counted once (FINAL) and their domain is
-- the one scored_ok gives them (the domain, else the topic cluster's label).
CREATE VIEW IF NOT EXISTS {db}.status_counts AS
SELECT
    model, domain, status,
    countIf(t <= newest_ts) AS n,
    countIf(t > newest_ts) AS future,
    toDateTime(min(t), 'UTC') AS first_ts,
    toDateTime(max(t), 'UTC') AS last_ts
FROM
(
    SELECT model, ifNull(domain, ifNull(cluster_label, '')) AS domain, status, toUInt32(ts) AS t,
        if(newest.newest_ts = 0, toUInt32(now()), newest.newest_ts) AS newest_ts
    FROM {db}.scored FINAL
    CROSS JOIN {db}.newest
    WHERE t + 86400 > newest_ts
)
GROUP BY model, domain, status
ORDER BY model, domain, status = 'ok', n DESC;
