-- 013: four corrections found by an audit of the SQL against an independent
-- recomputation, and label requests that expire.
--
-- 1. labeling_queue counted a response that was requested and then labelled
--    in both n_labelled and n_requested, so the queue divided a domain's
--    priority by sqrt(1 + 2 x labels) after a labeling round: n_requested is
--    now the responses requested and not labelled yet, and n_labelled +
--    n_requested + n_open = n. recent_windows is NULL (was 4294967295) when
--    the lookback holds fewer than min_n of the domain's responses.
-- 2. alarm_rows took rows dated after newest (a client clock ahead, or
--    created in the wrong unit) into their window, which every other view
--    leaves out: a window with 30 rows at p 0.8 and 30 future ones at p 0
--    was evaluated at n 60, accuracy 0.4. It now ends at newest.
-- 3. scored_ok took a caller's empty domain ('') as a domain: such traffic
--    never got its topic cluster's label and shared one slice. '' is now
--    missing, as NULL is.
-- 4. status_counts did not show responses that no estimator scored (no
--    estimator configured, or an LLM it has no model for: status 'ok', no
--    p_correct), which the accuracy views leave out: they are counted in the
--    new column unestimated. Its domain follows scored_ok's rule.
-- 5. A label request kept its response out of the queue for good, so
--    responses nobody labelled were never asked for again. A request now
--    expires at expires_at (new column of label_requests: `entrowatch labels
--    requests --expire-after`, 7 days after requested_at by default, also for
--    the requests already made); then the response counts as open again and
--    may be requested anew.

ALTER TABLE {db}.label_requests ADD COLUMN expires_at DateTime('UTC') DEFAULT requested_at + 604800;

DROP TABLE IF EXISTS {db}.scored_ok;

-- scored_ok: valid, estimated responses, one row per trace_id (FINAL), with
-- the effective domain: the caller's domain unless NULL or '', else the
-- topic cluster label, else '' (unclustered).
CREATE VIEW IF NOT EXISTS {db}.scored_ok AS
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
);

DROP TABLE IF EXISTS {db}.alarm_rows;

-- alarm_rows: scored_ok rows of the lookback (and of the baseline before
-- it), up to newest, with their window and the settings.
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
    WHERE toUInt32(ts) <= newest_ts
)
WHERE bucket + (lookback_windows + baseline_windows) * window_s >= newest_bucket;

DROP TABLE IF EXISTS {db}.label_status;

-- label_status: per valid response in the queue lookback (queue_lookback_s
-- up to newest), whether it is labelled (labels table or the trace's own
-- correct) or requested (entrowatch labels requests) by a request that has
-- not expired (expires_at, by the server's clock).
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
ANY LEFT JOIN
(
    SELECT DISTINCT trace_id, toUInt8(1) AS has_request
    FROM {db}.label_requests
    WHERE expires_at > now()
) AS r USING trace_id;

DROP TABLE IF EXISTS {db}.status_counts;

-- status_counts: the rows of the trailing day per model x domain x status;
-- the day ends at the newest row of any status not later than now() + 300 s
-- (the server clock when there is none); later rows are counted in future.
-- unestimated: the rows of n without p_correct (status 'ok' only; the
-- accuracy views leave them out).
CREATE VIEW IF NOT EXISTS {db}.status_counts AS
SELECT
    model, domain, status,
    countIf(t <= end_ts) AS n,
    countIf(t > end_ts) AS future,
    if(n > 0, toDateTime(minIf(t, t <= end_ts), 'UTC'), NULL) AS first_ts,
    if(n > 0, toDateTime(maxIf(t, t <= end_ts), 'UTC'), NULL) AS last_ts,
    countIf(t <= end_ts AND estimated = 0) AS unestimated
FROM
(
    SELECT model, if(ifNull(domain, '') = '', ifNull(cluster_label, ''), assumeNotNull(domain)) AS domain,
        status, toUInt32(ts) AS t, end_ts, toUInt8(isNotNull(p_correct)) AS estimated
    FROM {db}.scored FINAL
    CROSS JOIN
    (
        SELECT if(count() = 0, toUInt32(now()), toUInt32(max(ts))) AS end_ts
        FROM {db}.scored
        WHERE ts <= now() + 300
    ) AS day_end
    WHERE t + 86400 > end_ts
)
GROUP BY model, domain, status
ORDER BY model, domain, status = 'ok', n DESC;

DROP TABLE IF EXISTS {db}.labeling_queue;

-- labeling_queue: model x domain over the queue lookback, ranked by
--   priority = error * sqrt(var) / sqrt(1 + n_labelled + n_requested) * greatest(1, drop_z / drop_k)
-- error is the error rate: 1 - corrected where the lookback has labels
-- (accuracy_corrected), else 1 - accuracy; past drop_k, the recent period's.
-- sqrt(var) = se * n is the width of the interval times n (var = sum p(1-p),
-- floored as in accuracy); n_labelled are the responses labelled,
-- n_requested those requested (by a request not expired) and not labelled
-- yet, n_open the others (priority 0 when none is open). The recent period
-- is the newest window (window_s of alarm_settings, ending at newest),
-- widened by whole windows until it holds min_n of the domain's responses
-- (recent_windows of them; NULL when the lookback holds fewer). drop_z is how
-- many standard errors the recent period lies below the rest of the
-- lookback, 0 unless both hold min_n responses.
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
