-- 015: the views that look at recent traffic read only recent rows.
--
-- Every view read all of scored FINAL, whatever period it covers, so the
-- alarms (polled every 30 s by entrowatch alarms), the labeling queue and
-- the rolling accuracy slowed down as the table grew: an audit measured
-- alarm_checks at 4.0 s on 974,000 rows. scored_ok_recent is scored_ok
-- bounded below by newest minus the longest period those views need (the
-- alarms' lookback and baseline windows plus one, the queue lookback, one
-- day); the bound is a constant by the time ClickHouse plans the read, so
-- it skips the older parts and granules (measured on 2,000,000 rows over 23
-- days: 196,608 rows read instead of 2,000,000). The views below are those
-- of 010 and 013, reading scored_ok_recent instead of scored_ok; their
-- results are the same. accuracy, accuracy_by_attribute, calibration and
-- scored_ok itself cover the whole history and still read all of it.

-- scored_ok_recent: scored_ok from newest minus max((lookback_windows +
-- baseline_windows + 1) x window_s, queue_lookback_s, 1 day) on.
CREATE VIEW IF NOT EXISTS {db}.scored_ok_recent AS
SELECT
    trace_id, ts, ts_ms, model,
    if(ifNull(domain_given, '') = '', ifNull(cluster_label_given, ''), assumeNotNull(domain_given)) AS domain,
    domain_given, attributes_keys, attributes_values, prompt,
    p_correct_given AS p_correct,
    correct, cluster_id, cluster_label_given AS cluster_label, estimator_version,
    n_tokens, mean, std, max, q10, q25, q50, q75, q90, skew, kurt, sea,
    nll_mean, nll_max, nll_sum, perplexity, min_token_prob, margin_mean, h_top5
FROM
(
    SELECT
        trace_id, ts, ts_ms, model, domain AS domain_given, cluster_label AS cluster_label_given,
        attributes_keys, attributes_values, prompt, assumeNotNull(p_correct) AS p_correct_given,
        correct, cluster_id, estimator_version,
        n_tokens, mean, std, max, q10, q25, q50, q75, q90, skew, kurt, sea,
        nll_mean, nll_max, nll_sum, perplexity, min_token_prob, margin_mean, h_top5
    FROM {db}.scored FINAL
    WHERE status = 'ok' AND isNotNull(p_correct)
        AND ts >= (
            SELECT toDateTime(if(newest_ts > span, newest_ts - span, 0), 'UTC')
            FROM
            (
                SELECT newest_ts, greatest(greatest((lookback_windows + baseline_windows + 1) * window_s, queue_lookback_s), 86400) AS span
                FROM {db}.alarm_config
            )
        )
);

DROP TABLE IF EXISTS {db}.alarm_rows;

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
    FROM {db}.scored_ok_recent
    CROSS JOIN {db}.alarm_config
    WHERE toUInt32(ts) <= newest_ts
)
WHERE bucket + (lookback_windows + baseline_windows) * window_s >= newest_bucket;

DROP TABLE IF EXISTS {db}.alarm_calibration_gap;

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
                FROM {db}.scored_ok_recent
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

DROP TABLE IF EXISTS {db}.accuracy_rolling;

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
        FROM {db}.scored_ok_recent
        CROSS JOIN {db}.newest
        WHERE t <= newest_ts AND t + 86400 > newest_ts
    )
    ARRAY JOIN [300, 900, 3600, 21600, 86400] AS window_s
    WHERE t + window_s > newest_ts
)
GROUP BY model, domain, window_s;

DROP TABLE IF EXISTS {db}.label_status;

CREATE VIEW IF NOT EXISTS {db}.label_status AS
SELECT trace_id, ts, model, domain, p_correct, prompt,
    toUInt8(has_label = 1 OR isNotNull(correct)) AS labelled, has_request AS requested
FROM
(
    SELECT trace_id, ts, model, domain, p_correct, prompt, correct, has_label
    FROM
    (
        SELECT trace_id, ts, model, domain, p_correct, ifNull(prompt, '') AS prompt, correct
        FROM {db}.scored_ok_recent
        CROSS JOIN {db}.alarm_config
        WHERE toUInt32(ts) <= newest_ts AND toUInt32(ts) + queue_lookback_s > newest_ts
    ) AS s
    ANY LEFT JOIN (SELECT trace_id, toUInt8(1) AS has_label FROM {db}.labels_latest) AS l USING trace_id
) AS sl
ANY LEFT JOIN
(
    SELECT DISTINCT trace_id, toUInt8(1) AS has_request
    FROM {db}.label_requests
    WHERE expires_at > now()
) AS r USING trace_id;

DROP TABLE IF EXISTS {db}.accuracy_corrected;

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
                FROM {db}.scored_ok_recent
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

DROP TABLE IF EXISTS {db}.labeling_queue;

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
                (sum_recent + 0.5) * (n_recent + 0.5 - sum_recent) / ((n_recent + 1) * (n_recent + 1))) AS var_recent,
            greatest(sumIf(p_correct * (1 - p_correct), recent = 0),
                (sum_base + 0.5) * (n_base + 0.5 - sum_base) / ((n_base + 1) * (n_base + 1))) AS var_base,
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
