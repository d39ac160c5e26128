-- 016: drift tests use the binomial standard error of the estimated accuracy.
--
-- accuracy_drop, cusum and the labeling queue's drop_z compared windows with
-- se = sqrt(sum p(1-p)) / n, floored at one response's variance. That is how
-- uncertain the true accuracy of a window's responses is given their
-- p_correct, not how much the estimate of a window moves with its sample:
-- that is sd(p) / sqrt(n), and sum p(1-p) shrinks as an estimator grows
-- confident (p near 0 or 1) while sd(p) grows. A sharper estimator (the
-- recalibrated ensemble) fired accuracy_drop and cusum on a window with no
-- change (the demo: mul1x3 at 20:00, a half-full hour). The floor is now
-- n a(1-a), a = (sum p + 0.5) / (n + 1): the binomial variance of the
-- accuracy itself, at least sum p(1-p) + n var(p) (what an observed accuracy
-- of n responses would have; it does not depend on how sharp p_correct
-- is), so se = sqrt(max(sum p(1-p), n a(1-a))) / n. The accuracy view's
-- interval (the true accuracy of the responses seen) is unchanged. The views
-- below are those of 010 (accuracy_drop, cusum) and 015 (labeling_queue)
-- with that floor; their columns are the same.

DROP TABLE IF EXISTS {db}.alarm_accuracy_drop;

-- accuracy_drop: estimated accuracy of a window below the pooled estimate of
-- the baseline_windows before it by more than drop_k standard errors
-- (sqrt(se^2 + se_baseline^2), se the binomial standard error above) and by
-- min_drop. Evaluated when the window and its baseline hold min_n responses each.
CREATE VIEW IF NOT EXISTS {db}.alarm_accuracy_drop AS
SELECT
    'accuracy_drop' AS kind, model, domain, '' AS feature,
    toDateTime(target, 'UTC') AS window_start,
    n, value, baseline, baseline - value AS statistic,
    greatest(k * sqrt(se_value * se_value + se_baseline * se_baseline), min_drop_) AS threshold,
    toUInt8(n >= min_n_ AND n_baseline >= min_n_) AS evaluated,
    toUInt8(evaluated = 1 AND ifNull(statistic > threshold, 0) = 1) AS firing
FROM
(
    SELECT
        model, domain, target,
        sumIf(rows, i = 0) AS n,
        sumIf(rows, i > 0) AS n_baseline,
        sumIf(sum_p, i = 0) AS p_value,
        sumIf(sum_p, i > 0) AS p_baseline,
        if(n > 0, p_value / n, 0) AS value,
        if(n_baseline > 0, p_baseline / n_baseline, NULL) AS baseline,
        if(n > 0, sqrt(greatest(sumIf(sum_var, i = 0), n * (p_value + 0.5) * (n + 0.5 - p_value) / ((n + 1) * (n + 1)))) / n, 0) AS se_value,
        if(n_baseline > 0, sqrt(greatest(sumIf(sum_var, i > 0), n_baseline * (p_baseline + 0.5) * (n_baseline + 0.5 - p_baseline) / ((n_baseline + 1) * (n_baseline + 1)))) / n_baseline, 0) AS se_baseline,
        any(drop_k) AS k, any(min_drop) AS min_drop_, any(min_n) AS min_n_
    FROM
    (
        SELECT model, domain, rows, sum_p, sum_var, drop_k, min_drop, min_n, i, bucket + i * window_s AS target
        FROM {db}.alarm_buckets
        ARRAY JOIN range(baseline_windows + 1) AS i
        WHERE target <= newest_bucket AND target + lookback_windows * window_s >= newest_bucket
    )
    GROUP BY model, domain, target
    HAVING n > 0
);

DROP TABLE IF EXISTS {db}.alarm_cusum;

-- cusum: one-sided CUSUM of the per-window estimated accuracy of the lookback
-- against the pooled estimate of its first baseline_windows windows (the
-- reference period; baseline NULL when it holds no responses):
-- S_t = max(0, S_t-1 + (ref - est_t)/se_t - cusum_k), se_t the binomial
-- standard error above; fires while S_t > cusum_h. Evaluated after the
-- reference windows in windows of min_n responses.
CREATE VIEW IF NOT EXISTS {db}.alarm_cusum AS
SELECT
    'cusum' AS kind, model, domain, '' AS feature,
    toDateTime(b, 'UTC') AS window_start,
    n, value, if(ref_n > 0, reference, NULL) AS baseline, statistic, h AS threshold,
    toUInt8(j > ref_windows AND n >= min_n_ AND ref_n > 0) AS evaluated,
    toUInt8(evaluated = 1 AND statistic > h) AS firing
FROM
(
    SELECT model, domain, bs, ns, es, ses, reference, ref_n, ref_windows, k, h, min_n_,
        arrayCumSumNonNegative(arrayMap((e, sd, j, r, rw, kk) -> if(j <= rw, toFloat64(0), (r - e) / greatest(sd, 1e-9) - kk),
            es, ses, arrayEnumerate(es), arrayResize([reference], length(es), reference),
            arrayResize([ref_windows], length(es), ref_windows), arrayResize([k], length(es), k))) AS ss
    FROM
    (
        SELECT model, domain, bs, ns, es, ses, ref_windows, k, h, min_n_,
            arraySum(arraySlice(ns, 1, ref_windows)) AS ref_n,
            if(ref_n > 0, arraySum(arraySlice(arrayMap((c, e) -> c * e, ns, es), 1, ref_windows)) / ref_n, 0) AS reference
        FROM
        (
            SELECT model, domain,
                arraySort(x -> x.1, groupArray((bucket, n, est, se))) AS s,
                arrayMap(x -> x.1, s) AS bs, arrayMap(x -> x.2, s) AS ns,
                arrayMap(x -> x.3, s) AS es, arrayMap(x -> x.4, s) AS ses,
                any(ref_windows_) AS ref_windows, any(k_) AS k, any(h_) AS h, any(min_n__) AS min_n_
            FROM
            (
                SELECT model, domain, bucket, rows AS n, sum_p / rows AS est,
                    sqrt(greatest(sum_var, rows * (sum_p + 0.5) * (rows + 0.5 - sum_p) / ((rows + 1) * (rows + 1)))) / rows AS se,
                    baseline_windows AS ref_windows_, min_n AS min_n__, cusum_k AS k_, cusum_h AS h_
                FROM {db}.alarm_buckets
                WHERE bucket <= newest_bucket AND bucket + lookback_windows * window_s >= newest_bucket
            )
            GROUP BY model, domain
        )
    )
)
ARRAY JOIN bs AS b, ns AS n, es AS value, ss AS statistic, arrayEnumerate(bs) AS j;

DROP TABLE IF EXISTS {db}.labeling_queue;

-- labeling_queue: as in 015; drop_z with the binomial standard errors.
CREATE VIEW IF NOT EXISTS {db}.labeling_queue AS
SELECT model, domain, n, accuracy, se, lo, hi, n_labelled, n_requested, n_open,
    if(drop_z > drop_k, 1 - sum_recent / n_recent, if(corrected_n > 0, 1 - corrected_acc, 1 - accuracy))
        * sqrt(var_sum) * (n_open > 0) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k) AS priority,
    n_recent, recent_accuracy, baseline_accuracy, drop_z,
    if(corrected_n > 0, corrected_acc, NULL) AS corrected,
    if(recent_windows = 4294967295, NULL, recent_windows) AS recent_windows
FROM
(
    SELECT model, domain, n, accuracy, var_sum, se, lo, hi, n_labelled, n_requested, n_open, drop_k, n_recent, sum_recent,
        recent_windows,
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
            countIf(labelled = 1) AS n_labelled, countIf(requested = 1 AND labelled = 0) AS n_requested,
            countIf(labelled = 0 AND requested = 0) AS n_open,
            countIf(recent = 1) AS n_recent, countIf(recent = 0) AS n_base,
            sumIf(p_correct, recent = 1) AS sum_recent, sumIf(p_correct, recent = 0) AS sum_base,
            greatest(sumIf(p_correct * (1 - p_correct), recent = 1),
                n_recent * (sum_recent + 0.5) * (n_recent + 0.5 - sum_recent) / ((n_recent + 1) * (n_recent + 1))) AS var_recent,
            greatest(sumIf(p_correct * (1 - p_correct), recent = 0),
                n_base * (sum_base + 0.5) * (n_base + 0.5 - sum_base) / ((n_base + 1) * (n_base + 1))) AS var_base,
            any(drop_k_) AS drop_k, any(min_n_) AS min_n, any(reach) AS recent_windows
        FROM
        (
            SELECT model, domain, p_correct, labelled, requested, toUInt8(w < reach) AS recent, drop_k_, min_n_, reach
            FROM
            (
                SELECT model, domain, p_correct, labelled, requested,
                    intDiv(newest_ts - toUInt32(ts), window_s) AS w, drop_k AS drop_k_, min_n AS min_n_
                FROM {db}.label_status
                CROSS JOIN {db}.alarm_config
            ) AS s
            ANY LEFT JOIN
            (
                -- reach: how many windows back from newest the recent period
                -- covers, the fewest whose responses add up to min_n (all of
                -- them when the lookback holds fewer).
                SELECT model, domain,
                    arraySort(ws) AS sorted_ws,
                    arrayCumSum(arraySort((c, x) -> x, cs, ws)) AS cum,
                    arrayFirstIndex((c, m) -> c >= m, cum, arrayResize([mn], length(cum), mn)) AS first,
                    if(first = 0, toUInt32(4294967295), toUInt32(sorted_ws[first] + 1)) AS reach
                FROM
                (
                    SELECT model, domain, groupArray(w) AS ws, groupArray(c) AS cs, any(mn) AS mn
                    FROM
                    (
                        SELECT model, domain, intDiv(newest_ts - toUInt32(ts), window_s) AS w, count() AS c, any(min_n) AS mn
                        FROM {db}.scored_ok_recent
                        CROSS JOIN {db}.alarm_config
                        WHERE toUInt32(ts) <= newest_ts AND toUInt32(ts) + queue_lookback_s > newest_ts
                        GROUP BY model, domain, w
                    )
                    GROUP BY model, domain
                )
            ) AS r USING model, domain
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
