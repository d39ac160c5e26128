-- 004: labeling queue and calibration.
-- INNER JOINs are ALL (the right side has unique keys): current ClickHouse
-- reads ANY INNER JOIN as one row per key on both sides, 18.16 on the right only.

-- label_status: per scored response in the queue lookback (queue_lookback_s
-- before the newest response), whether it is labelled (labels table or the
-- trace's own correct) or already requested.
CREATE VIEW IF NOT EXISTS {db}.label_status AS
SELECT trace_id, ts, model, domain, p_correct, prompt,
    toUInt8(has_label = 1 OR isNotNull(correct)) AS labelled, has_request AS requested
FROM
(
    SELECT trace_id, ts, model, domain, p_correct, prompt, correct, has_label
    FROM
    (
        SELECT trace_id, ts, model, domain, p_correct, ifNull(prompt, '') AS prompt, correct
        FROM {db}.scored_ok
        WHERE toUInt32(ts) + (SELECT argMax(queue_lookback_s, updated_at) FROM {db}.alarm_settings) > (SELECT toUInt32(max(ts)) FROM {db}.scored)
    ) AS s
    ANY LEFT JOIN (SELECT trace_id, toUInt8(1) AS has_label FROM {db}.labels_latest) AS l USING trace_id
) AS sl
ANY LEFT JOIN (SELECT DISTINCT trace_id, toUInt8(1) AS has_request FROM {db}.label_requests) AS r USING trace_id;

-- labeling_queue: domains ranked by how much labeling would help:
-- priority = (1 - accuracy) * sqrt(sum p(1-p)) * open / n, i.e. the
-- estimated error rate times the width of the interval times n (grows as
-- sqrt(n) with volume), scaled by the share of responses neither labelled
-- nor requested yet.
CREATE VIEW IF NOT EXISTS {db}.labeling_queue AS
SELECT model, domain, n, accuracy, se, lo, hi, n_labelled, n_requested, n_open,
    (1 - accuracy) * sqrt(var_sum) * n_open / n AS priority
FROM
(
    SELECT model, domain, count() AS n, avg(p_correct) AS accuracy,
        sum(p_correct * (1 - p_correct)) AS var_sum, sqrt(var_sum) / n AS se,
        accuracy - 1.96 * se AS lo, accuracy + 1.96 * se AS hi,
        countIf(labelled = 1) AS n_labelled, countIf(requested = 1) AS n_requested,
        countIf(labelled = 0 AND requested = 0) AS n_open
    FROM {db}.label_status
    GROUP BY model, domain
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

-- calibration_bins: reliability diagram per model x domain over all
-- labelled responses: ten p_correct bins, mean estimate vs realised rate.
CREATE VIEW IF NOT EXISTS {db}.calibration_bins AS
SELECT model, domain, bin, count() AS n, avg(p_correct) AS estimated, avg(realised) AS realised_rate,
    sum(p_correct) AS sum_p, sum(realised) AS sum_realised, sum(p_correct * (1 - p_correct)) AS sum_var
FROM
(
    SELECT model, domain, p_correct, realised, least(toUInt8(floor(p_correct * 10)), 9) AS bin
    FROM {db}.labelled
)
GROUP BY model, domain, bin;

-- calibration: realised vs estimated accuracy per model x domain:
-- estimated = mean p_correct, realised = share correct, aee = |estimated -
-- realised|, ece = sum over bins of n_b/n * |mean p_b - realised_b|, se of
-- the estimate = sqrt(sum p(1-p))/n.
CREATE VIEW IF NOT EXISTS {db}.calibration AS
SELECT model, domain, n, estimated, realised, abs(estimated - realised) AS aee, ece, se
FROM
(
    SELECT model, domain, sum(n) AS n, sum(sum_p) / n AS estimated, sum(sum_realised) / n AS realised,
        sum(abs(sum_p - sum_realised)) / n AS ece, sqrt(sum(sum_var)) / n AS se
    FROM {db}.calibration_bins
    GROUP BY model, domain
);

-- calibration_models: per model, over all labelled responses: domains,
-- mean and max AEE across domains, and pooled ECE.
CREATE VIEW IF NOT EXISTS {db}.calibration_models AS
SELECT model, domains, n, mean_aee, max_aee, ece
FROM
(
    SELECT model, count() AS domains, sum(n) AS n, avg(aee) AS mean_aee, max(aee) AS max_aee
    FROM {db}.calibration
    GROUP BY model
) AS d
ALL INNER JOIN
(
    SELECT model, sum(abs(sp - sr)) / sum(nb) AS ece
    FROM
    (
        SELECT model, bin, sum(n) AS nb, sum(sum_p) AS sp, sum(sum_realised) AS sr
        FROM {db}.calibration_bins
        GROUP BY model, bin
    )
    GROUP BY model
) AS p USING model;
