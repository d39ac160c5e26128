-- 005: the labeling queue weighs drift. A domain whose estimated accuracy
-- fell recently is where the estimator is least trustworthy (its inputs
-- moved away from what it was trained on) and where labels say the most, so
-- it must rank above a domain that has always been hard.

-- labeling_queue: model x domain over the queue lookback, ranked by
--   priority = error * sqrt(sum p(1-p)) * n_open / n * greatest(1, drop_z / drop_k)
-- error is the estimated error rate, 1 - accuracy; sqrt(sum p(1-p)) is the
-- width of the interval times n (grows as sqrt(n) with volume); n_open / n
-- is the share of responses neither labelled nor requested yet. The drift
-- term: drop_z is how many standard errors the newest window (window_s of
-- alarm_settings, ending at the newest response) lies below the rest of the
-- lookback, 0 unless both hold min_n responses. Below the accuracy_drop
-- alarm's drop_k nothing changes. Beyond it the error rate is the newest
-- window's (the domain's state now, not the lookback's average) and the
-- priority grows in proportion to drop_z (twice the threshold, twice).
-- labeling_candidates reads the queue; current ClickHouse checks a view's
-- column types against those recorded when it was created, so it is made
-- again after the queue (same text as in 004).
DROP TABLE IF EXISTS {db}.labeling_candidates;

DROP TABLE IF EXISTS {db}.labeling_queue;

CREATE VIEW IF NOT EXISTS {db}.labeling_queue AS
SELECT model, domain, n, accuracy, se, lo, hi, n_labelled, n_requested, n_open,
    if(drop_z > drop_k, 1 - sum_recent / n_recent, 1 - accuracy) * sqrt(var_sum) * n_open / n * greatest(1, drop_z / drop_k) AS priority,
    n_recent, recent_accuracy, baseline_accuracy, drop_z
FROM
(
    SELECT model, domain, n, accuracy, var_sum, se, lo, hi, n_labelled, n_requested, n_open, drop_k, n_recent, sum_recent,
        if(n_recent > 0, sum_recent / n_recent, NULL) AS recent_accuracy,
        if(n_base > 0, sum_base / n_base, NULL) AS baseline_accuracy,
        if(n_recent >= min_n AND n_base >= min_n,
            greatest(0, (sum_base / n_base - sum_recent / n_recent)
                / sqrt(greatest(var_recent / (n_recent * n_recent) + var_base / (n_base * n_base), 1e-18))),
            0) AS drop_z
    FROM
    (
        SELECT model, domain, count() AS n, avg(p_correct) AS accuracy,
            sum(p_correct * (1 - p_correct)) AS var_sum, sqrt(var_sum) / n AS se,
            accuracy - 1.96 * se AS lo, accuracy + 1.96 * se AS hi,
            countIf(labelled = 1) AS n_labelled, countIf(requested = 1) AS n_requested,
            countIf(labelled = 0 AND requested = 0) AS n_open,
            countIf(recent = 1) AS n_recent, countIf(recent = 0) AS n_base,
            sumIf(p_correct, recent = 1) AS sum_recent, sumIf(p_correct, recent = 0) AS sum_base,
            sumIf(p_correct * (1 - p_correct), recent = 1) AS var_recent,
            sumIf(p_correct * (1 - p_correct), recent = 0) AS var_base,
            any(drop_k_) AS drop_k, any(min_n_) AS min_n
        FROM
        (
            SELECT model, domain, p_correct, labelled, requested,
                toUInt8(toUInt32(ts) + (SELECT argMax(window_s, updated_at) FROM {db}.alarm_settings) > (SELECT toUInt32(max(ts)) FROM {db}.scored)) AS recent,
                assumeNotNull((SELECT argMax(drop_k, updated_at) FROM {db}.alarm_settings)) AS drop_k_,
                assumeNotNull((SELECT argMax(min_n, updated_at) FROM {db}.alarm_settings)) AS min_n_
            FROM {db}.label_status
        )
        GROUP BY model, domain
    )
)
ORDER BY priority DESC, model, domain;

-- labeling_candidates: per queued domain, the responses to label next: open
-- ones only, stratified into five p_correct strata (0-0.2, ..., 0.8-1), the
-- most uncertain (p nearest 0.5) first within a stratum; taking rows in
-- (stratum_rank, uncertainty) order interleaves the strata.
CREATE VIEW IF NOT EXISTS {db}.labeling_candidates AS
SELECT model, domain, priority, stratum, stratum_rank, trace_id, p_correct, uncertainty, ts, prompt
FROM
(
    SELECT model, domain, stratum, stratum_rank,
        c.1 AS trace_id, c.2 AS uncertainty, c.3 AS p_correct, c.4 AS ts, c.5 AS prompt
    FROM
    (
        SELECT model, domain, stratum,
            arraySort(x -> (x.2, x.1), groupArray((trace_id, abs(p_correct - 0.5), p_correct, ts, prompt))) AS cs
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
ORDER BY priority DESC, model, domain, stratum_rank, uncertainty, trace_id;
