-- 003: drift alarms. Each alarm_* view evaluates one kind per window (bucket
-- of alarm_settings.window_s seconds) over the last lookback_windows windows
-- before the newest response, and has the same columns:
--   kind, model, domain, feature, window_start, n, value, baseline, statistic,
--   threshold, firing
-- alarm_checks is their union, alarms the firing rows. No window functions:
-- responses are first aggregated per window (alarm_buckets, alarm_bins); each
-- window's aggregate then counts for its own window (i = 0) and as baseline
-- of the next baseline_windows windows (i = 1..B), and conditional
-- aggregates split the two.
-- Lambdas get per-row constants as arrays (arrayResize): 18.16 loses columns
-- that are only captured by a lambda.

-- alarm_config: the current settings (newest alarm_settings row) and the
-- newest response time.
CREATE VIEW IF NOT EXISTS {db}.alarm_config AS
SELECT *, (SELECT toUInt32(max(ts)) FROM {db}.scored) AS newest_ts
FROM (SELECT * FROM {db}.alarm_settings ORDER BY updated_at DESC LIMIT 1);

-- alarm_rows: scored_ok rows of the lookback (and of the baseline before
-- it) with their window and the settings.
CREATE VIEW IF NOT EXISTS {db}.alarm_rows AS
SELECT *
FROM
(
    SELECT
        model, domain, p_correct, cluster_id, mean, q50, max,
        intDiv(toUInt32(ts), window_s) * window_s AS bucket,
        intDiv(newest_ts, window_s) * window_s AS newest_bucket,
        window_s, baseline_windows, lookback_windows, min_n, drop_k, min_drop, psi_bin_width, psi_threshold,
        cusum_k, cusum_h, surge_k, surge_min_increase
    FROM {db}.scored_ok
    CROSS JOIN {db}.alarm_config
)
WHERE bucket + (lookback_windows + baseline_windows) * window_s >= newest_bucket;

-- alarm_buckets: per model x domain x window: responses, sum p, sum p(1-p),
-- responses with a cluster decision and unclustered ones (cluster_id = -1).
CREATE VIEW IF NOT EXISTS {db}.alarm_buckets AS
SELECT
    model, domain, bucket,
    count() AS rows, sum(p_correct) AS sum_p, sum(p_correct * (1 - p_correct)) AS sum_var,
    countIf(isNotNull(cluster_id)) AS rows_clustered, countIf(ifNull(cluster_id, 0) = -1) AS rows_unclustered,
    any(newest_bucket) AS newest_bucket, any(window_s) AS window_s, any(baseline_windows) AS baseline_windows,
    any(lookback_windows) AS lookback_windows, any(min_n) AS min_n, any(drop_k) AS drop_k, any(min_drop) AS min_drop,
    any(cusum_k) AS cusum_k, any(cusum_h) AS cusum_h, any(surge_k) AS surge_k, any(surge_min_increase) AS surge_min_increase
FROM {db}.alarm_rows
GROUP BY model, domain, bucket;

-- alarm_bins: per model x domain x window x entropy feature (mean, q50, max)
-- x histogram bin of psi_bin_width nats: responses.
CREATE VIEW IF NOT EXISTS {db}.alarm_bins AS
SELECT
    model, domain, bucket, feature, bin, count() AS rows,
    any(newest_bucket) AS newest_bucket, any(window_s) AS window_s, any(baseline_windows) AS baseline_windows,
    any(lookback_windows) AS lookback_windows, any(min_n) AS min_n, any(psi_threshold) AS psi_threshold
FROM
(
    SELECT model, domain, bucket, newest_bucket, window_s, baseline_windows, lookback_windows, min_n, psi_threshold,
        feature, least(toUInt32(floor(greatest(x, 0) / psi_bin_width)), 1000) AS bin
    FROM {db}.alarm_rows
    ARRAY JOIN ['mean', 'q50', 'max'] AS feature, [mean, q50, max] AS x
)
GROUP BY model, domain, bucket, feature, bin;

-- accuracy_drop: estimated accuracy of a window below the pooled estimate of
-- the baseline_windows before it by more than drop_k standard errors
-- (sqrt(se^2 + se_baseline^2), se = sqrt(sum p(1-p))/n) and by min_drop.
CREATE VIEW IF NOT EXISTS {db}.alarm_accuracy_drop AS
SELECT
    'accuracy_drop' AS kind, model, domain, '' AS feature,
    toDateTime(target, 'UTC') AS window_start,
    n, value, baseline, baseline - value AS statistic,
    greatest(k * sqrt(se_value * se_value + se_baseline * se_baseline), min_drop_) AS threshold,
    toUInt8(n >= min_n_ AND n_baseline >= min_n_ AND statistic > threshold) AS firing
FROM
(
    SELECT
        model, domain, target,
        sumIf(rows, i = 0) AS n,
        sumIf(rows, i > 0) AS n_baseline,
        if(n > 0, sumIf(sum_p, i = 0) / n, 0) AS value,
        if(n_baseline > 0, sumIf(sum_p, i > 0) / n_baseline, 0) AS baseline,
        if(n > 0, sqrt(sumIf(sum_var, i = 0)) / n, 0) AS se_value,
        if(n_baseline > 0, sqrt(sumIf(sum_var, i > 0)) / n_baseline, 0) AS se_baseline,
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

-- psi: population stability index of the entropy features mean, q50 and max
-- (histograms with psi_bin_width-nat bins, +0.5 smoothing) of a window
-- against the baseline_windows before it. Fires above psi_threshold plus the
-- PSI that sampling alone gives, (bins - 1) * (1/n + 1/n_baseline).
CREATE VIEW IF NOT EXISTS {db}.alarm_psi AS
SELECT
    'psi' AS kind, model, domain, feature,
    toDateTime(target, 'UTC') AS window_start,
    n, psi AS value, toFloat64(0) AS baseline, psi AS statistic,
    thr + (k - 1) * (1 / n + 1 / n_baseline) AS threshold,
    toUInt8(n >= min_n_ AND n_baseline >= min_n_ AND psi > threshold) AS firing
FROM
(
    SELECT
        model, domain, feature, target, n, n_baseline, thr, min_n_, k, cur, ref,
        arraySum((a, b, na, nb, kk) -> ((a + 0.5) / (na + 0.5 * kk) - (b + 0.5) / (nb + 0.5 * kk))
            * log(((a + 0.5) / (na + 0.5 * kk)) / ((b + 0.5) / (nb + 0.5 * kk))),
            cur, ref, arrayResize([n], k, n), arrayResize([n_baseline], k, n_baseline), arrayResize([k], k, k)) AS psi
    FROM
    (
        SELECT
            model, domain, feature, target,
            groupArray(c_cur) AS cur, groupArray(c_ref) AS ref,
            arraySum(cur) AS n, arraySum(ref) AS n_baseline, length(cur) AS k,
            any(psi_threshold_) AS thr, any(min_n_) AS min_n_
        FROM
        (
            SELECT
                model, domain, feature, target, bin,
                sumIf(rows, i = 0) AS c_cur, sumIf(rows, i > 0) AS c_ref,
                any(psi_threshold) AS psi_threshold_, any(min_n) AS min_n_
            FROM
            (
                SELECT model, domain, feature, bin, rows, psi_threshold, min_n, i, bucket + i * window_s AS target
                FROM {db}.alarm_bins
                ARRAY JOIN range(baseline_windows + 1) AS i
                WHERE target <= newest_bucket AND target + lookback_windows * window_s >= newest_bucket
            )
            GROUP BY model, domain, feature, target, bin
        )
        GROUP BY model, domain, feature, target
    )
    WHERE n > 0
);

-- cusum: one-sided CUSUM of the per-window estimates of a model x domain
-- against the pooled estimate of its first baseline_windows windows in the
-- lookback (the reference period): S_t = max(0, S_t-1 + (ref - est_t)/se_t -
-- cusum_k); fires while S_t > cusum_h.
CREATE VIEW IF NOT EXISTS {db}.alarm_cusum AS
SELECT
    'cusum' AS kind, model, domain, '' AS feature,
    toDateTime(b, 'UTC') AS window_start,
    n, value, reference AS baseline, statistic, h AS threshold,
    toUInt8(j > ref_windows AND n >= min_n_ AND statistic > h) AS firing
FROM
(
    SELECT model, domain, bs, ns, es, ses, reference, ref_windows, k, h, min_n_,
        arrayCumSumNonNegative(arrayMap((e, sd, j, r, rw, kk) -> if(j <= rw, toFloat64(0), (r - e) / greatest(sd, 1e-9) - kk),
            es, ses, arrayEnumerate(es), arrayResize([reference], length(es), reference),
            arrayResize([ref_windows], length(es), ref_windows), arrayResize([k], length(es), k))) AS ss
    FROM
    (
        SELECT model, domain, bs, ns, es, ses, ref_windows, k, h, min_n_,
            if(arraySum(arraySlice(ns, 1, ref_windows)) > 0,
               arraySum(arraySlice(arrayMap((c, e) -> c * e, ns, es), 1, ref_windows)) / arraySum(arraySlice(ns, 1, ref_windows)),
               0) AS reference
        FROM
        (
            SELECT model, domain,
                arraySort(x -> x.1, groupArray((bucket, n, est, se))) AS s,
                arrayMap(x -> x.1, s) AS bs, arrayMap(x -> x.2, s) AS ns,
                arrayMap(x -> x.3, s) AS es, arrayMap(x -> x.4, s) AS ses,
                any(ref_windows_) AS ref_windows, any(k_) AS k, any(h_) AS h, any(min_n__) AS min_n_
            FROM
            (
                SELECT model, domain, bucket, rows AS n, sum_p / rows AS est, sqrt(sum_var) / rows AS se,
                    baseline_windows AS ref_windows_, min_n AS min_n__, cusum_k AS k_, cusum_h AS h_
                FROM {db}.alarm_buckets
                WHERE bucket + lookback_windows * window_s >= newest_bucket
            )
            GROUP BY model, domain
        )
    )
)
ARRAY JOIN bs AS b, ns AS n, es AS value, ss AS statistic, arrayEnumerate(bs) AS j;

-- calibration_gap: over the labelled responses of the lookback, estimated
-- (mean p_correct) vs realised accuracy per model x domain; fires when the
-- gap exceeds calib_k standard errors (sqrt(sum p(1-p))/n, the spread
-- calibrated estimates would show) and calib_min_gap, with at least
-- calib_min_labels labels.
CREATE VIEW IF NOT EXISTS {db}.alarm_calibration_gap AS
SELECT
    'calibration_gap' AS kind, model, domain, '' AS feature,
    toDateTime(nb, 'UTC') AS window_start,
    n, value, baseline, abs(value - baseline) AS statistic,
    greatest(k * se, min_gap) AS threshold,
    toUInt8(n >= min_labels AND statistic > threshold) AS firing
FROM
(
    SELECT model, domain, count() AS n, avg(p_correct) AS value, avg(realised) AS baseline,
        sqrt(sum(p_correct * (1 - p_correct))) / n AS se,
        any(newest_bucket) AS nb, any(calib_k) AS k, any(calib_min_gap) AS min_gap, any(calib_min_labels) AS min_labels
    FROM
    (
        SELECT model, domain, p_correct, realised, calib_k, calib_min_gap, calib_min_labels,
            intDiv(newest_ts, window_s) * window_s AS newest_bucket
        FROM {db}.labelled
        CROSS JOIN {db}.alarm_config
        WHERE toUInt32(ts) + lookback_windows * window_s >= newest_ts
    )
    GROUP BY model, domain
);

-- unclustered_surge: share of responses no topic cluster claims
-- (cluster_id = -1) in a window vs its baseline windows, per model; fires
-- when it rises by more than surge_k binomial standard errors and by
-- surge_min_increase.
CREATE VIEW IF NOT EXISTS {db}.alarm_unclustered_surge AS
SELECT
    'unclustered_surge' AS kind, model, '' AS domain, '' AS feature,
    toDateTime(target, 'UTC') AS window_start,
    n, value, baseline, value - baseline AS statistic,
    greatest(k * sqrt(greatest(baseline * (1 - baseline), 1 / (n_baseline + 1)) / n), min_inc) AS threshold,
    toUInt8(n >= min_n_ AND n_baseline >= min_n_ AND statistic > threshold) AS firing
FROM
(
    SELECT
        model, target,
        sumIf(rows_clustered, i = 0) AS n,
        sumIf(rows_clustered, i > 0) AS n_baseline,
        if(n > 0, sumIf(rows_unclustered, i = 0) / n, 0) AS value,
        if(n_baseline > 0, sumIf(rows_unclustered, i > 0) / n_baseline, 0) AS baseline,
        any(surge_k) AS k, any(surge_min_increase) AS min_inc, any(min_n) AS min_n_
    FROM
    (
        SELECT model, rows_clustered, rows_unclustered, surge_k, surge_min_increase, min_n, i, bucket + i * window_s AS target
        FROM {db}.alarm_buckets
        ARRAY JOIN range(baseline_windows + 1) AS i
        WHERE target <= newest_bucket AND target + lookback_windows * window_s >= newest_bucket
    )
    GROUP BY model, target
    HAVING n > 0
);

-- alarm_checks: every evaluation of every kind; alarms: the firing ones.
CREATE VIEW IF NOT EXISTS {db}.alarm_checks AS
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value, toFloat64(baseline) AS baseline,
    toFloat64(statistic) AS statistic, toFloat64(threshold) AS threshold, toUInt8(firing) AS firing FROM {db}.alarm_accuracy_drop
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value, toFloat64(baseline) AS baseline,
    toFloat64(statistic) AS statistic, toFloat64(threshold) AS threshold, toUInt8(firing) AS firing FROM {db}.alarm_psi
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value, toFloat64(baseline) AS baseline,
    toFloat64(statistic) AS statistic, toFloat64(threshold) AS threshold, toUInt8(firing) AS firing FROM {db}.alarm_cusum
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value, toFloat64(baseline) AS baseline,
    toFloat64(statistic) AS statistic, toFloat64(threshold) AS threshold, toUInt8(firing) AS firing FROM {db}.alarm_calibration_gap
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value, toFloat64(baseline) AS baseline,
    toFloat64(statistic) AS statistic, toFloat64(threshold) AS threshold, toUInt8(firing) AS firing FROM {db}.alarm_unclustered_surge;

CREATE VIEW IF NOT EXISTS {db}.alarms AS
SELECT * FROM {db}.alarm_checks WHERE firing = 1;
