-- 010: what "now" is, alarm state, calibration weights, interval floors.
--
-- newest. The views took the newest response time as max(ts) over all of
-- scored: rejected rows included and never bounded, so one response dated
-- three days ahead (even a rejected one) moved every "current" view three
-- days ahead, where there are no responses: accuracy_rolling, the labeling
-- queue, accuracy_corrected and the alarms came back empty and the
-- dispatcher resolved every open alarm. The view newest is now the one
-- definition: the newest valid (status = 'ok') response not later than
-- now() + 5 minutes. Later rows are left out of it rather than clamping it
-- to now() + 5 min, which would end every trailing window in the future
-- where no response is yet. The current views also leave out rows after
-- newest. It reads ts and status of scored (no FINAL: duplicates do not move
-- a maximum), once per view: every view joins it (18.16 runs a scalar
-- subquery again for each reference to it).
--
-- alarm state. Each alarm view gets a column evaluated: 1 where the window
-- held enough data to be judged (n and the baseline >= min_n; cusum after
-- its reference windows; calibration_gap with calib_min_labels labels).
-- The dispatcher takes an alarm's state from its latest evaluated window,
-- so a young partial window no longer resolves an alarm nor hides one.
--
-- calibration weights. `entrowatch labels requests` takes as many responses
-- from each p_correct stratum, however few responses the stratum holds, and
-- calibration and calibration_gap averaged those labels unweighted: their
-- "realised" was not the domain's accuracy. Both now weight each of the ten
-- p_correct bins by its responses N_b (as accuracy_corrected does); bins
-- without labels are left out of estimated and realised alike (coverage).
--
-- interval floors. An isotonic p_correct is often exactly 1 (or 0), where
-- sum p(1-p) = 0 claims certainty: four responses at p = 1 gave [1, 1].
-- Every se of n responses now uses
--   max(sum p(1-p), a(1-a)), a = (sum p + 0.5) / (n + 1)
-- as its variance sum: never less than one response at the accuracy
-- smoothed by half a pseudo-response each way (Jeffreys). Elsewhere
-- sum p(1-p) is far larger and nothing changes. The sample variance of the
-- labels of a bin in accuracy_corrected (and a bin's p(1-p) in calibration)
-- is floored the same way by the bin's smoothed label rate: 30 labels, all
-- 0, no longer give a zero-width correction.
--
-- Also: where a window has no baseline, accuracy_drop and unclustered_surge
-- give baseline (and statistic) NULL instead of 0, cusum baseline NULL
-- without reference data, and psi threshold NULL instead of nan or inf;
-- alarm_checks' baseline, statistic and threshold are Nullable(Float64).
--
-- Every view that changes is dropped (dependents first) and made again;
-- current ClickHouse checks a view's recorded column types, so a view that
-- reads a changed view is made again after it.
DROP TABLE IF EXISTS {db}.alarms;

DROP TABLE IF EXISTS {db}.alarm_checks;

DROP TABLE IF EXISTS {db}.alarm_accuracy_drop;

DROP TABLE IF EXISTS {db}.alarm_psi;

DROP TABLE IF EXISTS {db}.alarm_cusum;

DROP TABLE IF EXISTS {db}.alarm_calibration_gap;

DROP TABLE IF EXISTS {db}.alarm_unclustered_surge;

DROP TABLE IF EXISTS {db}.alarm_config;

DROP TABLE IF EXISTS {db}.labeling_candidates;

DROP TABLE IF EXISTS {db}.labeling_queue;

DROP TABLE IF EXISTS {db}.label_status;

DROP TABLE IF EXISTS {db}.accuracy_corrected;

DROP TABLE IF EXISTS {db}.calibration_models;

DROP TABLE IF EXISTS {db}.calibration;

DROP TABLE IF EXISTS {db}.calibration_bins;

DROP TABLE IF EXISTS {db}.accuracy_rolling;

DROP TABLE IF EXISTS {db}.accuracy_by_attribute;

DROP TABLE IF EXISTS {db}.accuracy;

-- newest: the time of the newest valid response, not later than now() + 5
-- minutes (300 s of clock skew tolerated); Unix seconds.
CREATE VIEW IF NOT EXISTS {db}.newest AS
SELECT toUInt32(max(ts)) AS newest_ts
FROM {db}.scored
WHERE status = 'ok' AND ts <= now() + 300;

-- accuracy: estimated accuracy per model x domain over tumbling windows of
-- 5 min, 15 min, 1 h, 6 h and 1 day. se = sqrt(max(sum p(1-p), a(1-a))) / n
-- with a = (sum p + 0.5) / (n + 1); lo/hi is the 95% interval, clipped to [0, 1].
CREATE VIEW IF NOT EXISTS {db}.accuracy AS
SELECT
    model, domain, window_s,
    toDateTime(intDiv(toUInt32(ts), window_s) * window_s, 'UTC') AS window_start,
    count() AS n,
    avg(p_correct) AS accuracy,
    sqrt(greatest(sum(p_correct * (1 - p_correct)), (sum(p_correct) + 0.5) * (n + 0.5 - sum(p_correct)) / ((n + 1) * (n + 1)))) / n AS se,
    least(greatest(accuracy - 1.96 * se, 0), 1) AS lo,
    least(greatest(accuracy + 1.96 * se, 0), 1) AS hi
FROM {db}.scored_ok
ARRAY JOIN [300, 900, 3600, 21600, 86400] AS window_s
GROUP BY model, domain, window_s, window_start;

-- accuracy_by_attribute: the same per attribute slice (tenant, route, ...).
CREATE VIEW IF NOT EXISTS {db}.accuracy_by_attribute AS
SELECT
    model, domain, attr_key, attr_value, window_s,
    toDateTime(intDiv(toUInt32(ts), window_s) * window_s, 'UTC') AS window_start,
    count() AS n,
    avg(p_correct) AS accuracy,
    sqrt(greatest(sum(p_correct * (1 - p_correct)), (sum(p_correct) + 0.5) * (n + 0.5 - sum(p_correct)) / ((n + 1) * (n + 1)))) / n AS se,
    least(greatest(accuracy - 1.96 * se, 0), 1) AS lo,
    least(greatest(accuracy + 1.96 * se, 0), 1) AS hi
FROM
(
    SELECT model, domain, ts, p_correct, attr_key, attr_value
    FROM {db}.scored_ok
    ARRAY JOIN attributes_keys AS attr_key, attributes_values AS attr_value
)
ARRAY JOIN [300, 900, 3600, 21600, 86400] AS window_s
GROUP BY model, domain, attr_key, attr_value, window_s, window_start;

-- accuracy_rolling: the trailing windows (5 min .. 1 day) ending at newest,
-- per model x domain: the current state of each slice.
CREATE VIEW IF NOT EXISTS {db}.accuracy_rolling AS
SELECT
    model, domain, window_s,
    count() AS n,
    avg(p_correct) AS accuracy,
    sqrt(greatest(sum(p_correct * (1 - p_correct)), (sum(p_correct) + 0.5) * (n + 0.5 - sum(p_correct)) / ((n + 1) * (n + 1)))) / n AS se,
    least(greatest(accuracy - 1.96 * se, 0), 1) AS lo,
    least(greatest(accuracy + 1.96 * se, 0), 1) AS hi
FROM
(
    SELECT model, domain, p_correct, t, newest_ts, window_s
    FROM
    (
        SELECT model, domain, p_correct, toUInt32(ts) AS t, newest_ts
        FROM {db}.scored_ok
        CROSS JOIN {db}.newest
        WHERE t <= newest_ts AND t + 86400 > newest_ts
    )
    ARRAY JOIN [300, 900, 3600, 21600, 86400] AS window_s
    WHERE t + window_s > newest_ts
)
GROUP BY model, domain, window_s;

-- alarm_config: the current settings (newest alarm_settings row) and newest.
CREATE VIEW IF NOT EXISTS {db}.alarm_config AS
SELECT *, (SELECT newest_ts FROM {db}.newest) AS newest_ts
FROM (SELECT * FROM {db}.alarm_settings ORDER BY updated_at DESC LIMIT 1);

-- accuracy_drop: estimated accuracy of a window below the pooled estimate of
-- the baseline_windows before it by more than drop_k standard errors
-- (sqrt(se^2 + se_baseline^2), se floored as in accuracy) and by min_drop.
-- Evaluated when the window and its baseline hold min_n responses each.
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
        if(n > 0, sqrt(greatest(sumIf(sum_var, i = 0), (p_value + 0.5) * (n + 0.5 - p_value) / ((n + 1) * (n + 1)))) / n, 0) AS se_value,
        if(n_baseline > 0, sqrt(greatest(sumIf(sum_var, i > 0), (p_baseline + 0.5) * (n_baseline + 0.5 - p_baseline) / ((n_baseline + 1) * (n_baseline + 1)))) / n_baseline, 0) AS se_baseline,
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
-- against the baseline_windows before it. Fires above psi_threshold plus what
-- sampling alone rarely exceeds: (bins - 1 + 2 sqrt(2 (bins - 1))) * (1/n + 1/n_baseline);
-- threshold NULL without a baseline. Evaluated as accuracy_drop.
CREATE VIEW IF NOT EXISTS {db}.alarm_psi AS
SELECT
    'psi' AS kind, model, domain, feature,
    toDateTime(target, 'UTC') AS window_start,
    n, psi AS value, toFloat64(0) AS baseline, psi AS statistic,
    if(n_baseline > 0, thr + ((k - 1) + 2 * sqrt(2 * (k - 1))) * (1 / n + 1 / n_baseline), NULL) AS threshold,
    toUInt8(n >= min_n_ AND n_baseline >= min_n_) AS evaluated,
    toUInt8(evaluated = 1 AND ifNull(psi > threshold, 0) = 1) AS firing
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
-- lookback (the reference period; baseline NULL when it holds no responses):
-- S_t = max(0, S_t-1 + (ref - est_t)/se_t - cusum_k), se_t floored as in
-- accuracy; fires while S_t > cusum_h. Evaluated after the reference windows
-- in windows of min_n responses.
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
                    sqrt(greatest(sum_var, (sum_p + 0.5) * (rows + 0.5 - sum_p) / ((rows + 1) * (rows + 1)))) / rows AS se,
                    baseline_windows AS ref_windows_, min_n AS min_n__, cusum_k AS k_, cusum_h AS h_
                FROM {db}.alarm_buckets
                WHERE bucket <= newest_bucket AND bucket + lookback_windows * window_s >= newest_bucket
            )
            GROUP BY model, domain
        )
    )
)
ARRAY JOIN bs AS b, ns AS n, es AS value, ss AS statistic, arrayEnumerate(bs) AS j;

-- calibration_gap: over the responses of the lookback, per model x domain,
-- estimated (value) vs realised (baseline) accuracy of the labelled ones,
-- each of the ten p_correct bins weighted by its responses N_b:
--   value = sum_b N_b mean p_b / N, baseline = sum_b N_b realised_b / N
-- over the bins with labels (N their responses). Fires when the gap exceeds
-- calib_k standard errors, sqrt(sum_b N_b^2 v_b / n_b^2) / N (v_b = sum p(1-p)
-- of the bin's n_b labelled responses, floored as in accuracy: the spread
-- calibrated estimates would show), and calib_min_gap. Evaluated with at
-- least calib_min_labels labels (n).
CREATE VIEW IF NOT EXISTS {db}.alarm_calibration_gap AS
SELECT
    'calibration_gap' AS kind, model, domain, '' AS feature,
    toDateTime(nb, 'UTC') AS window_start,
    n, value, baseline, abs(value - baseline) AS statistic,
    greatest(k * se, min_gap) AS threshold,
    toUInt8(n >= min_labels) AS evaluated,
    toUInt8(evaluated = 1 AND statistic > threshold) AS firing
FROM
(
    SELECT model, domain, sum(labels) AS n, sum(responses) AS covered,
        sum(responses * sp / labels) / covered AS value,
        sum(responses * sr / labels) / covered AS baseline,
        sqrt(sum(responses * responses * greatest(sv, (sp + 0.5) * (labels + 0.5 - sp) / ((labels + 1) * (labels + 1))) / (labels * labels))) / covered AS se,
        any(nb_) AS nb, any(k_) AS k, any(min_gap_) AS min_gap, any(min_labels_) AS min_labels
    FROM
    (
        SELECT model, domain, bin, count() AS responses, countIf(lab = 1) AS labels,
            sumIf(p_correct, lab = 1) AS sp, sumIf(realised, lab = 1) AS sr, sumIf(p_correct * (1 - p_correct), lab = 1) AS sv,
            any(newest_bucket) AS nb_, any(calib_k) AS k_, any(calib_min_gap) AS min_gap_, any(calib_min_labels) AS min_labels_
        FROM
        (
            SELECT model, domain, least(toUInt8(floor(p_correct * 10)), 9) AS bin, p_correct,
                toUInt8(has_label = 1 OR isNotNull(correct)) AS lab,
                if(has_label = 1, label_correct, ifNull(correct, 0)) AS realised,
                newest_bucket, calib_k, calib_min_gap, calib_min_labels
            FROM
            (
                SELECT trace_id, model, domain, p_correct, correct, calib_k, calib_min_gap, calib_min_labels,
                    intDiv(newest_ts, window_s) * window_s AS newest_bucket
                FROM {db}.scored_ok
                CROSS JOIN {db}.alarm_config
                WHERE toUInt32(ts) <= newest_ts AND toUInt32(ts) + lookback_windows * window_s >= newest_ts
            ) AS s
            ANY LEFT JOIN (SELECT trace_id, toUInt8(1) AS has_label, correct AS label_correct FROM {db}.labels_latest) AS l USING trace_id
        )
        GROUP BY model, domain, bin
        HAVING labels > 0
    )
    GROUP BY model, domain
);

-- unclustered_surge: share of responses no topic cluster claims
-- (cluster_id = -1) in a window vs its baseline windows (NULL without one),
-- per model; fires when it rises by more than surge_k binomial standard
-- errors and by surge_min_increase. Evaluated as accuracy_drop.
CREATE VIEW IF NOT EXISTS {db}.alarm_unclustered_surge AS
SELECT
    'unclustered_surge' AS kind, model, '' AS domain, '' AS feature,
    toDateTime(target, 'UTC') AS window_start,
    n, value, baseline, value - baseline AS statistic,
    greatest(k * sqrt(greatest(ifNull(baseline, 0) * (1 - ifNull(baseline, 0)), 1 / (n_baseline + 1)) / n), min_inc) AS threshold,
    toUInt8(n >= min_n_ AND n_baseline >= min_n_) AS evaluated,
    toUInt8(evaluated = 1 AND ifNull(statistic > threshold, 0) = 1) AS firing
FROM
(
    SELECT
        model, target,
        sumIf(rows_clustered, i = 0) AS n,
        sumIf(rows_clustered, i > 0) AS n_baseline,
        if(n > 0, sumIf(rows_unclustered, i = 0) / n, 0) AS value,
        if(n_baseline > 0, sumIf(rows_unclustered, i > 0) / n_baseline, NULL) AS baseline,
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
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value,
    CAST(baseline AS Nullable(Float64)) AS baseline, CAST(statistic AS Nullable(Float64)) AS statistic,
    CAST(threshold AS Nullable(Float64)) AS threshold, toUInt8(evaluated) AS evaluated, toUInt8(firing) AS firing
FROM {db}.alarm_accuracy_drop
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value,
    CAST(baseline AS Nullable(Float64)) AS baseline, CAST(statistic AS Nullable(Float64)) AS statistic,
    CAST(threshold AS Nullable(Float64)) AS threshold, toUInt8(evaluated) AS evaluated, toUInt8(firing) AS firing
FROM {db}.alarm_psi
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value,
    CAST(baseline AS Nullable(Float64)) AS baseline, CAST(statistic AS Nullable(Float64)) AS statistic,
    CAST(threshold AS Nullable(Float64)) AS threshold, toUInt8(evaluated) AS evaluated, toUInt8(firing) AS firing
FROM {db}.alarm_cusum
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value,
    CAST(baseline AS Nullable(Float64)) AS baseline, CAST(statistic AS Nullable(Float64)) AS statistic,
    CAST(threshold AS Nullable(Float64)) AS threshold, toUInt8(evaluated) AS evaluated, toUInt8(firing) AS firing
FROM {db}.alarm_calibration_gap
UNION ALL
SELECT kind, model, domain, feature, window_start, toUInt64(n) AS n, toFloat64(value) AS value,
    CAST(baseline AS Nullable(Float64)) AS baseline, CAST(statistic AS Nullable(Float64)) AS statistic,
    CAST(threshold AS Nullable(Float64)) AS threshold, toUInt8(evaluated) AS evaluated, toUInt8(firing) AS firing
FROM {db}.alarm_unclustered_surge;

CREATE VIEW IF NOT EXISTS {db}.alarms AS
SELECT * FROM {db}.alarm_checks WHERE firing = 1;

-- label_status: per valid response in the queue lookback (queue_lookback_s
-- up to newest), whether it is labelled (labels table or the trace's own
-- correct) or already requested.
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
        CROSS JOIN {db}.alarm_config
        WHERE toUInt32(ts) <= newest_ts AND toUInt32(ts) + queue_lookback_s > newest_ts
    ) AS s
    ANY LEFT JOIN (SELECT trace_id, toUInt8(1) AS has_label FROM {db}.labels_latest) AS l USING trace_id
) AS sl
ANY LEFT JOIN (SELECT DISTINCT trace_id, toUInt8(1) AS has_request FROM {db}.label_requests) AS r USING trace_id;

-- labeling_queue: model x domain over the queue lookback, ranked by
--   priority = error * sqrt(var) * n_open / n * greatest(1, drop_z / drop_k)
-- error is the estimated error rate, 1 - accuracy; sqrt(var) = se * n is the
-- width of the interval times n (var = sum p(1-p), floored as in accuracy);
-- n_open / n is the share of responses neither labelled nor requested yet.
-- drop_z is how many standard errors the newest window (window_s of
-- alarm_settings, ending at newest) lies below the rest of the lookback, 0
-- unless both hold min_n responses. Beyond drop_k the error rate is the
-- newest window's and the priority grows in proportion to drop_z.
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

-- accuracy_corrected: per model x domain over the queue lookback (up to
-- newest), the estimate corrected by the labelled responses among them
-- (prediction-powered estimation, stratified): ten p_correct bins; in each
-- bin with labels the mean of realised - p_correct over its labelled
-- responses is added to the bin's mean estimate:
--   corrected = sum_b N_b / N * (mean p_b + mean(realised - p)_b)
-- Bins without labels keep their estimate. se combines the labelled bins'
-- sampling error of the correction, (N_b / N)^2 v_b / n_b, with the
-- estimate's own sqrt(var) / N over the other bins (var as in accuracy).
-- v_b is the sample variance of realised - p (p(1-p) of the bin's mean with
-- one label), at least y(1-y) with y = (labels correct + 0.5) / (n_b + 1):
-- labels that all agree leave that much doubt. coverage is the share of
-- responses in bins with labels. corrected, lo and hi are clipped to [0, 1].
CREATE VIEW IF NOT EXISTS {db}.accuracy_corrected AS
SELECT model, domain, n, estimated, n_labelled, least(greatest(corrected_raw, 0), 1) AS corrected, se,
    least(greatest(corrected_raw - 1.96 * se, 0), 1) AS lo, least(greatest(corrected_raw + 1.96 * se, 0), 1) AS hi, coverage
FROM
(
    SELECT model, domain, sum(nb) AS n, sum(sp) / n AS estimated, sum(nl) AS n_labelled,
        (sum(sp) + sumIf(nb * sd / nl, nl > 0)) / n AS corrected_raw,
        sumIf(nb, nl = 0) AS n_unlabelled, sumIf(sp, nl = 0) AS sp_unlabelled,
        sqrt(sumIf(nb * nb * greatest(if(nl >= 2, greatest(sd2 - sd * sd / nl, 0) / (nl - 1), (sp / nb) * (1 - sp / nb)),
                    (sy + 0.5) * (nl + 0.5 - sy) / ((nl + 1) * (nl + 1))) / nl, nl > 0)
            + if(n_unlabelled > 0, greatest(sumIf(spq, nl = 0),
                    (sp_unlabelled + 0.5) * (n_unlabelled + 0.5 - sp_unlabelled) / ((n_unlabelled + 1) * (n_unlabelled + 1))), 0)) / n AS se,
        sumIf(nb, nl > 0) / n AS coverage
    FROM
    (
        SELECT model, domain, least(toUInt8(floor(p_correct * 10)), 9) AS bin,
            count() AS nb, sum(p_correct) AS sp, sum(p_correct * (1 - p_correct)) AS spq,
            countIf(lab = 1) AS nl,
            sumIf(realised, lab = 1) AS sy,
            sumIf(realised - p_correct, lab = 1) AS sd,
            sumIf((realised - p_correct) * (realised - p_correct), lab = 1) AS sd2
        FROM
        (
            SELECT model, domain, p_correct, toUInt8(has_label = 1 OR isNotNull(correct)) AS lab,
                toFloat64(if(has_label = 1, label_correct, ifNull(correct, 0))) AS realised
            FROM
            (
                SELECT trace_id, model, domain, p_correct, correct
                FROM {db}.scored_ok
                CROSS JOIN {db}.alarm_config
                WHERE toUInt32(ts) <= newest_ts AND toUInt32(ts) + queue_lookback_s > newest_ts
            ) AS s
            ANY LEFT JOIN (SELECT trace_id, toUInt8(1) AS has_label, correct AS label_correct FROM {db}.labels_latest) AS l USING trace_id
        )
        GROUP BY model, domain, bin
    )
    GROUP BY model, domain
)
ORDER BY model, domain;

-- calibration_strata: per model x domain x p_correct bin (ten) over all
-- valid responses: population (responses) and, over the labelled ones (labels
-- table, else the trace's correct), n, sum p, sum realised, sum p(1-p).
CREATE VIEW IF NOT EXISTS {db}.calibration_strata AS
SELECT model, domain, least(toUInt8(floor(p_correct * 10)), 9) AS bin, count() AS population,
    countIf(lab = 1) AS n, sumIf(p_correct, lab = 1) AS sum_p, sumIf(realised, lab = 1) AS sum_realised,
    sumIf(p_correct * (1 - p_correct), lab = 1) AS sum_var
FROM
(
    SELECT model, domain, p_correct, toUInt8(has_label = 1 OR isNotNull(correct)) AS lab,
        if(has_label = 1, label_correct, ifNull(correct, 0)) AS realised
    FROM (SELECT trace_id, model, domain, p_correct, correct FROM {db}.scored_ok) AS s
    ANY LEFT JOIN (SELECT trace_id, toUInt8(1) AS has_label, correct AS label_correct FROM {db}.labels_latest) AS l USING trace_id
)
GROUP BY model, domain, bin;

-- calibration_bins: reliability diagram per model x domain over all
-- labelled responses: the p_correct bins with labels, mean estimate vs
-- realised rate, and the bin's responses (population).
CREATE VIEW IF NOT EXISTS {db}.calibration_bins AS
SELECT model, domain, bin, n, sum_p / n AS estimated, sum_realised / n AS realised_rate,
    sum_p, sum_realised, sum_var, population
FROM {db}.calibration_strata
WHERE n > 0;

-- calibration: realised vs estimated accuracy per model x domain, each bin
-- with labels weighted by its responses N_b (N their sum):
--   estimated = sum_b N_b mean p_b / N, realised = sum_b N_b realised_b / N,
--   aee = |estimated - realised|, ece = sum_b N_b / N |mean p_b - realised_b|,
--   se = sqrt(sum_b N_b^2 v_b / n_b^2) / N, v_b as in calibration_gap,
--   coverage = N / all responses of the domain.
CREATE VIEW IF NOT EXISTS {db}.calibration AS
SELECT model, domain, n, est AS estimated, rea AS realised, abs(est - rea) AS aee, ece, se, coverage
FROM
(
    SELECT model, domain, sum(labels) AS n, sumIf(population, labels > 0) AS covered,
        sumIf(population * sum_p / labels, labels > 0) / covered AS est,
        sumIf(population * sum_realised / labels, labels > 0) / covered AS rea,
        sumIf(population * abs(sum_p - sum_realised) / labels, labels > 0) / covered AS ece,
        sqrt(sumIf(population * population * greatest(sum_var, (sum_p + 0.5) * (labels + 0.5 - sum_p) / ((labels + 1) * (labels + 1)))
            / (labels * labels), labels > 0)) / covered AS se,
        covered / sum(population) AS coverage
    FROM (SELECT model, domain, population, n AS labels, sum_p, sum_realised, sum_var FROM {db}.calibration_strata)
    GROUP BY model, domain
    HAVING n > 0
);

-- calibration_models: per model: domains with labels, labels, mean and max
-- AEE across domains, and the ECE of the model's bins pooled across domains
-- (each domain's bin weighted by its responses, as in calibration).
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
    SELECT model, sum(abs(gap)) / sum(covered) AS ece
    FROM
    (
        SELECT model, bin, sum(population * (sum_p - sum_realised) / n) AS gap, sum(population) AS covered
        FROM {db}.calibration_strata
        WHERE n > 0
        GROUP BY model, bin
    )
    GROUP BY model
) AS p USING model;
