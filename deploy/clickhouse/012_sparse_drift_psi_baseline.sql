-- 012: the labeling queue's drift term for sparse domains, and psi's
-- baseline NULL without baseline windows.
--
-- Until now a domain's recent period was the newest alarm window (window_s,
-- ending at newest) for every domain, and drop_z needed min_n responses in
-- it: a domain with fewer than min_n responses an hour (50 by default) never
-- got the drift boost however far it fell. Now the recent period is the
-- newest window, widened by whole windows back from newest until it holds
-- min_n of the domain's responses; busy domains are unchanged.
--
-- alarm_psi gave baseline 0 and a statistic where a window has no baseline
-- windows at all; the other kinds give NULL there, and so does psi now.

DROP TABLE IF EXISTS {db}.labeling_queue;

-- labeling_queue: model x domain over the queue lookback, ranked by
--   priority = error * sqrt(var) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k)
-- error is the error rate: 1 - corrected where the lookback has labels
-- (accuracy_corrected), else 1 - accuracy; past drop_k, the recent period's.
-- sqrt(var) = se * n is the width of the interval times n (var = sum p(1-p),
-- floored as in accuracy); n_labelled + n_requested are the responses
-- labelled or requested already (priority 0 when none is left open). The
-- recent period is the newest window (window_s of alarm_settings, ending at
-- newest), widened by whole windows until it holds min_n of the domain's
-- responses (recent_windows of them). drop_z is how many standard errors the
-- recent period lies below the rest of the lookback, 0 unless both hold min_n
-- responses.
CREATE VIEW IF NOT EXISTS {db}.labeling_queue AS
SELECT model, domain, n, accuracy, se, lo, hi, n_labelled, n_requested, n_open,
    if(drop_z > drop_k, 1 - sum_recent / n_recent, if(corrected_n > 0, 1 - corrected_acc, 1 - accuracy))
        * sqrt(var_sum) * (n_open > 0) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k) AS priority,
    n_recent, recent_accuracy, baseline_accuracy, drop_z,
    if(corrected_n > 0, corrected_acc, NULL) AS corrected,
    recent_windows
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
            countIf(labelled = 1) AS n_labelled, countIf(requested = 1) AS n_requested,
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
                        FROM {db}.scored_ok
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

DROP TABLE IF EXISTS {db}.alarm_psi;

-- psi: population stability index of the entropy features mean, q50 and max
-- (histograms with psi_bin_width-nat bins, +0.5 smoothing) of a window
-- against the baseline_windows before it. Fires above psi_threshold plus what
-- sampling alone rarely exceeds: (bins - 1 + 2 sqrt(2 (bins - 1))) * (1/n + 1/n_baseline).
-- baseline is 0 (the PSI of no change); baseline, statistic and threshold
-- are NULL without a baseline. Evaluated as accuracy_drop.
CREATE VIEW IF NOT EXISTS {db}.alarm_psi AS
SELECT
    'psi' AS kind, model, domain, feature,
    toDateTime(target, 'UTC') AS window_start,
    n, psi AS value, if(n_baseline > 0, toFloat64(0), NULL) AS baseline, if(n_baseline > 0, psi, NULL) AS statistic,
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
