-- 008: intervals clipped to [0, 1]. lo/hi were accuracy -/+ 1.96 se, so a
-- domain estimated at 0.996 got hi = 1.001, and one near 0 a negative lo:
-- bounds no accuracy can reach. Every view with lo/hi is made again with
-- least(greatest(x, 0), 1) around both bounds, its text otherwise unchanged:
-- accuracy, accuracy_by_attribute and accuracy_rolling from 002,
-- labeling_queue and labeling_candidates from 005, accuracy_corrected from
-- 006, whose corrected estimate is clipped as well, so that
-- lo <= corrected <= hi still holds. labeling_candidates reads the queue and
-- current ClickHouse checks a view's recorded column types, so it is made
-- again after the queue.
DROP TABLE IF EXISTS {db}.accuracy;

DROP TABLE IF EXISTS {db}.accuracy_by_attribute;

DROP TABLE IF EXISTS {db}.accuracy_rolling;

DROP TABLE IF EXISTS {db}.labeling_candidates;

DROP TABLE IF EXISTS {db}.labeling_queue;

DROP TABLE IF EXISTS {db}.accuracy_corrected;

-- accuracy: estimated accuracy per model x domain over tumbling windows of
-- 5 min, 15 min, 1 h, 6 h and 1 day. se = sqrt(sum p(1-p)) / n; lo/hi is the
-- 95% interval, clipped to [0, 1].
CREATE VIEW IF NOT EXISTS {db}.accuracy AS
SELECT
    model, domain, window_s,
    toDateTime(intDiv(toUInt32(ts), window_s) * window_s, 'UTC') AS window_start,
    count() AS n,
    avg(p_correct) AS accuracy,
    sqrt(sum(p_correct * (1 - p_correct))) / n AS se,
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
    sqrt(sum(p_correct * (1 - p_correct))) / n AS se,
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

-- accuracy_rolling: the trailing windows (5 min .. 1 day) ending at the
-- newest response, per model x domain: the current state of each slice.
CREATE VIEW IF NOT EXISTS {db}.accuracy_rolling AS
SELECT
    model, domain, window_s,
    count() AS n,
    avg(p_correct) AS accuracy,
    sqrt(sum(p_correct * (1 - p_correct))) / n AS se,
    least(greatest(accuracy - 1.96 * se, 0), 1) AS lo,
    least(greatest(accuracy + 1.96 * se, 0), 1) AS hi
FROM
(
    SELECT model, domain, p_correct, toUInt32(ts) AS t, window_s,
        (SELECT toUInt32(max(ts)) FROM {db}.scored) AS newest
    FROM {db}.scored_ok
    ARRAY JOIN [300, 900, 3600, 21600, 86400] AS window_s
)
WHERE t > newest - window_s
GROUP BY model, domain, window_s;

-- labeling_queue: model x domain over the queue lookback, ranked by
--   priority = error * sqrt(sum p(1-p)) * n_open / n * greatest(1, drop_z / drop_k)
-- error is the estimated error rate, 1 - accuracy; sqrt(sum p(1-p)) is the
-- width of the interval times n (grows as sqrt(n) with volume); n_open / n
-- is the share of responses neither labelled nor requested yet. The drift
-- term: drop_z is how many standard errors the newest window (window_s of
-- alarm_settings, ending at the newest response) lies below the rest of the
-- lookback, 0 unless both hold min_n responses. Below the accuracy_drop
-- alarm's drop_k nothing changes. Beyond it the error rate is the newest
-- window's (the domain's state now, not the lookback's average) and the
-- priority grows in proportion to drop_z (twice the threshold, twice).
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
        SELECT model, domain, count() AS n, avg(p_correct) AS accuracy,
            sum(p_correct * (1 - p_correct)) AS var_sum, sqrt(var_sum) / n AS se,
            least(greatest(accuracy - 1.96 * se, 0), 1) AS lo, least(greatest(accuracy + 1.96 * se, 0), 1) AS hi,
            countIf(labelled = 1) AS n_labelled, countIf(requested = 1) AS n_requested,
            countIf(labelled = 0 AND requested = 0) AS n_open,
            countIf(recent = 1) AS n_recent, countIf(recent = 0) AS n_base,
            sumIf(p_correct, recent = 1) AS sum_recent, sumIf(p_correct, recent = 0) AS sum_base,
            sumIf(p_correct * (1 - p_correct), recent = 1) AS var_recent,
            sumIf(p_correct * (1 - p_correct), recent = 0) AS var_base,
            any(drop_k_) AS drop_k, any(min_n_) AS min_n
        FROM
        (
            SELECT model, domain, p_correct, labelled, requested,
                toUInt8(toUInt32(ts) + (SELECT argMax(window_s, updated_at) FROM {db}.alarm_settings) > (SELECT toUInt32(max(ts)) FROM {db}.scored)) AS recent,
                assumeNotNull((SELECT argMax(drop_k, updated_at) FROM {db}.alarm_settings)) AS drop_k_,
                assumeNotNull((SELECT argMax(min_n, updated_at) FROM {db}.alarm_settings)) AS min_n_
            FROM {db}.label_status
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

-- accuracy_corrected: per model x domain over the queue lookback
-- (queue_lookback_s before the newest response), the estimate corrected by
-- the labelled responses among them (prediction-powered estimation,
-- stratified like the labeling candidates): the responses fall into ten
-- p_correct bins; in each bin with labels, the mean of realised - p_correct
-- over its labelled responses is added to the bin's mean estimate:
--   corrected = sum_b N_b / N * (mean p_b + mean(realised - p)_b)
-- Bins without labels keep their estimate. The labelled responses of a bin
-- are taken as a random sample of it (labeling_candidates picks the most
-- uncertain first, but p varies little within a bin). se combines the
-- labelled bins' sampling error of the correction, (N_b / N)^2 var_b / n_b
-- (var_b the sample variance of realised - p; p(1-p) of the bin's mean with
-- one label), with the estimate's own sqrt(sum p(1-p)) / N in the others.
-- coverage is the share of responses in bins with labels: where it is 1 the
-- correction no longer depends on the estimator's calibration. corrected, lo
-- and hi are clipped to [0, 1] (a correction can push a bin past 1 or 0).
CREATE VIEW IF NOT EXISTS {db}.accuracy_corrected AS
SELECT model, domain, n, estimated, n_labelled, least(greatest(corrected_raw, 0), 1) AS corrected, se,
    least(greatest(corrected_raw - 1.96 * se, 0), 1) AS lo, least(greatest(corrected_raw + 1.96 * se, 0), 1) AS hi, coverage
FROM
(
    SELECT model, domain, sum(nb) AS n, sum(sp) / n AS estimated, sum(nl) AS n_labelled,
        (sum(sp) + sumIf(nb * sd / nl, nl > 0)) / n AS corrected_raw,
        sqrt(sumIf(nb * nb * if(nl >= 2, greatest(sd2 - sd * sd / nl, 0) / (nl - 1), (sp / nb) * (1 - sp / nb)) / nl, nl > 0)
            + sumIf(spq, nl = 0)) / n AS se,
        sumIf(nb, nl > 0) / n AS coverage
    FROM
    (
        SELECT model, domain, least(toUInt8(floor(p_correct * 10)), 9) AS bin,
            count() AS nb, sum(p_correct) AS sp, sum(p_correct * (1 - p_correct)) AS spq,
            countIf(has_label = 1) AS nl,
            sumIf(realised - p_correct, has_label = 1) AS sd,
            sumIf((realised - p_correct) * (realised - p_correct), has_label = 1) AS sd2
        FROM
        (
            SELECT trace_id, model, domain, p_correct
            FROM {db}.scored_ok
            WHERE toUInt32(ts) + (SELECT argMax(queue_lookback_s, updated_at) FROM {db}.alarm_settings) > (SELECT toUInt32(max(ts)) FROM {db}.scored)
        ) AS s
        ANY LEFT JOIN (SELECT trace_id, toUInt8(1) AS has_label, toFloat64(realised) AS realised FROM {db}.labelled) AS l USING trace_id
        GROUP BY model, domain, bin
    )
    GROUP BY model, domain
)
ORDER BY model, domain;
