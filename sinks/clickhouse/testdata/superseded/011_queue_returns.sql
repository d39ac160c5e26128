-- 011: labels have diminishing returns in the labeling queue.
--
-- labeling_queue scaled a domain's priority by n_open / n, the share of its
-- responses neither labelled nor requested: 80 labels among 1,240 responses
-- lowered it by 6%, so the same domains stayed on top until most of their
-- traffic was labelled, while others got none. What labels buy is a
-- corrected estimate (accuracy_corrected) whose error shrinks as
-- 1 / sqrt(labels); the priority now says so:
--   priority = error * sqrt(var) / sqrt(1 + n_labelled + n_requested)
--              * greatest(1, drop_z / drop_k), and 0 when nothing is open.
-- A domain's first labels count most, and labels go to domains in proportion
-- to their traffic times their error (with equal error rates, a domain with
-- 100 times the responses gets about 100 times the labels before the smaller
-- one's first). labeling_candidates reads the queue: both are made again.
DROP TABLE IF EXISTS {db}.labeling_candidates;

DROP TABLE IF EXISTS {db}.labeling_queue;

-- labeling_queue: model x domain over the queue lookback, ranked by
--   priority = error * sqrt(var) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k)
-- error is the estimated error rate, 1 - accuracy; sqrt(var) = se * n is the
-- width of the interval times n (var = sum p(1-p), floored as in accuracy);
-- n_labelled + n_requested are the responses labelled or requested already
-- (priority 0 when none is left open). drop_z is how many standard errors the
-- newest window (window_s of alarm_settings, ending at newest) lies below the
-- rest of the lookback, 0 unless both hold min_n responses. Beyond drop_k the
-- error rate is the newest window's and the priority grows in proportion to
-- drop_z.
CREATE VIEW IF NOT EXISTS {db}.labeling_queue AS
SELECT model, domain, n, accuracy, se, lo, hi, n_labelled, n_requested, n_open,
    if(drop_z > drop_k, 1 - sum_recent / n_recent, 1 - accuracy) * sqrt(var_sum) * (n_open > 0) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k) AS priority,
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
        SELECT model, domain, count() AS n, avg(p_correct) AS accuracy, sum(p_correct) AS sum_p,
            greatest(sum(p_correct * (1 - p_correct)), (sum_p + 0.5) * (n + 0.5 - sum_p) / ((n + 1) * (n + 1))) AS var_sum,
            sqrt(var_sum) / n AS se,
            least(greatest(accuracy - 1.96 * se, 0), 1) AS lo, least(greatest(accuracy + 1.96 * se, 0), 1) AS hi,
            countIf(labelled = 1) AS n_labelled, countIf(requested = 1) AS n_requested,
            countIf(labelled = 0 AND requested = 0) AS n_open,
            countIf(recent = 1) AS n_recent, countIf(recent = 0) AS n_base,
            sumIf(p_correct, recent = 1) AS sum_recent, sumIf(p_correct, recent = 0) AS sum_base,
            greatest(sumIf(p_correct * (1 - p_correct), recent = 1),
                (sum_recent + 0.5) * (n_recent + 0.5 - sum_recent) / ((n_recent + 1) * (n_recent + 1))) AS var_recent,
            greatest(sumIf(p_correct * (1 - p_correct), recent = 0),
                (sum_base + 0.5) * (n_base + 0.5 - sum_base) / ((n_base + 1) * (n_base + 1))) AS var_base,
            any(drop_k_) AS drop_k, any(min_n_) AS min_n
        FROM
        (
            SELECT model, domain, p_correct, labelled, requested,
                toUInt8(toUInt32(ts) + window_s > newest_ts) AS recent, drop_k AS drop_k_, min_n AS min_n_
            FROM {db}.label_status
            CROSS JOIN {db}.alarm_config
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
