-- 011: status_counts, what the stream could not estimate.
--
-- The accuracy views read scored_ok (status = 'ok' rows with an estimate),
-- so responses that were rejected (positive_logprob, too_long, ...) or not
-- estimated (unknown_model, bad_feature) were visible only by querying
-- scored by hand. status_counts counts them per model x domain x status over
-- the trailing day, and the rows dated in the future (a client clock ahead,
-- or created in the wrong unit: every other view ignores them) in the column
-- future. The day ends at the newest row of any status not later than
-- now() + 5 minutes (the bound newest uses), not at newest, which only valid
-- responses define: traffic that is all rejected is current, not future.
-- Traces are counted once (FINAL) and their domain is the one scored_ok
-- gives them (the domain, else the topic cluster's label).
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
