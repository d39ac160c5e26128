-- 014: the labeling queue reads what the labels showed.
--
-- The queue's error rate was the estimate's (1 - accuracy) even where labels
-- had shown the estimate wrong: a domain whose labels said 0.05 where the
-- estimate said 0.5 ranked like one whose labels agreed. Where the lookback
-- holds labels, the error rate is now 1 - accuracy_corrected's corrected
-- accuracy (the estimate corrected by the labels, per p_correct bin), and
-- the queue shows it in a new column, corrected (NULL without labels). The
-- drift term is unchanged: after a drop the newest window's estimate leads.
DROP TABLE IF EXISTS {db}.labeling_candidates;

DROP TABLE IF EXISTS {db}.labeling_queue;

-- labeling_queue: model x domain over the queue lookback, ranked by
--   priority = error * sqrt(var) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k)
-- error is the error rate: 1 - corrected where the lookback has labels
-- (accuracy_corrected), else 1 - accuracy; past drop_k, the newest window's.
-- sqrt(var) = se * n is the width of the interval times n (var = sum p(1-p),
-- floored as in accuracy); n_labelled + n_requested are the responses
-- labelled or requested already (priority 0 when none is left open). drop_z
-- is how many standard errors the newest window (window_s of alarm_settings,
-- ending at newest) lies below the rest of the lookback, 0 unless both hold
-- min_n responses.
CREATE VIEW IF NOT EXISTS {db}.labeling_queue AS
SELECT model, domain, n, accuracy, se, lo, hi, n_labelled, n_requested, n_open,
    if(drop_z > drop_k, 1 - sum_recent / n_recent, if(corrected_n > 0, 1 - corrected_acc, 1 - accuracy))
        * sqrt(var_sum) * (n_open > 0) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k) AS priority,
    n_recent, recent_accuracy, baseline_accuracy, drop_z,
    if(corrected_n > 0, corrected_acc, NULL) AS corrected
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
) AS q
ANY LEFT JOIN
(
    SELECT model, domain, corrected AS corrected_acc, n_labelled AS corrected_n
    FROM {db}.accuracy_corrected
) AS c USING model, domain
ORDER BY priority DESC, model, domain;

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
