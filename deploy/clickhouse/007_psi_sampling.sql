-- 007: fewer false psi alarms at low volume. The PSI of a window and its
-- baseline drawn from one distribution is about (1/n + 1/n_baseline) times a
-- chi-square with bins - 1 degrees of freedom: mean bins - 1, standard
-- deviation sqrt(2 (bins - 1)). 003 fired above psi_threshold plus that mean;
-- at 50 responses per window (min_n) against a 300-response baseline, with
-- gamma-distributed entropies in 0.25-nat bins, that was 0.5-0.9% of the
-- windows of every feature, about one false alarm per domain every two days
-- with hourly windows. The threshold now adds two standard deviations:
-- 0-0.05% on the same traffic, while a 0.3-nat shift at 50 responses is still
-- caught in 99-100% of windows (TestPSILowVolume). With more responses the
-- sampling terms shrink and psi_threshold alone decides, as before.
-- alarm_checks and alarms read alarm_psi and are made again after it (same
-- text as in 003): current ClickHouse checks a view's recorded column types.
DROP TABLE IF EXISTS {db}.alarms;

DROP TABLE IF EXISTS {db}.alarm_checks;

DROP TABLE IF EXISTS {db}.alarm_psi;

-- psi: population stability index of the entropy features mean, q50 and max
-- (histograms with psi_bin_width-nat bins, +0.5 smoothing) of a window
-- against the baseline_windows before it. Fires above psi_threshold plus what
-- sampling alone rarely exceeds: (bins - 1 + 2 sqrt(2 (bins - 1))) * (1/n + 1/n_baseline).
CREATE VIEW IF NOT EXISTS {db}.alarm_psi AS
SELECT
    'psi' AS kind, model, domain, feature,
    toDateTime(target, 'UTC') AS window_start,
    n, psi AS value, toFloat64(0) AS baseline, psi AS statistic,
    thr + ((k - 1) + 2 * sqrt(2 * (k - 1))) * (1 / n + 1 / n_baseline) AS threshold,
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
