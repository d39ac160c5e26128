-- 002: deduplicated inputs and rolling accuracy.

-- scored_ok: valid, estimated responses, one row per trace_id (FINAL), with
-- the effective domain: the caller's domain, else the topic cluster label,
-- else '' (unclustered).
CREATE VIEW IF NOT EXISTS {db}.scored_ok AS
SELECT
    trace_id, ts, ts_ms, model,
    ifNull(domain_given, ifNull(cluster_label_given, '')) AS domain,
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

-- labels_latest: one label per trace, the newest by ts.
CREATE VIEW IF NOT EXISTS {db}.labels_latest AS
SELECT
    trace_id,
    argMax(correct, toUInt64(ts) * 1000 + ts_ms) AS correct,
    argMax(source, toUInt64(ts) * 1000 + ts_ms) AS source,
    max(ts) AS labelled_at
FROM {db}.labels
GROUP BY trace_id;

-- labelled: scored responses with ground truth, from the labels table or
-- else from the trace itself (scored.correct).
CREATE VIEW IF NOT EXISTS {db}.labelled AS
SELECT trace_id, ts, model, domain, p_correct, realised
FROM
(
    SELECT trace_id, ts, model, domain, p_correct, if(has_label = 1, label_correct, assumeNotNull(correct)) AS realised,
        has_label, correct
    FROM
    (
        SELECT trace_id, ts, model, domain, p_correct, correct FROM {db}.scored_ok
    ) AS s
    ANY LEFT JOIN
    (
        SELECT trace_id, toUInt8(1) AS has_label, correct AS label_correct FROM {db}.labels_latest
    ) AS l USING trace_id
    WHERE has_label = 1 OR isNotNull(correct)
);

-- accuracy: estimated accuracy per model x domain over tumbling windows of
-- 5 min, 15 min, 1 h, 6 h and 1 day. se = sqrt(sum p(1-p)) / n; lo/hi is the
-- 95% interval.
CREATE VIEW IF NOT EXISTS {db}.accuracy AS
SELECT
    model, domain, window_s,
    toDateTime(intDiv(toUInt32(ts), window_s) * window_s, 'UTC') AS window_start,
    count() AS n,
    avg(p_correct) AS accuracy,
    sqrt(sum(p_correct * (1 - p_correct))) / n AS se,
    accuracy - 1.96 * se AS lo,
    accuracy + 1.96 * se AS hi
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
    accuracy - 1.96 * se AS lo,
    accuracy + 1.96 * se AS hi
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
    accuracy - 1.96 * se AS lo,
    accuracy + 1.96 * se AS hi
FROM
(
    SELECT model, domain, p_correct, toUInt32(ts) AS t, window_s,
        (SELECT toUInt32(max(ts)) FROM {db}.scored) AS newest
    FROM {db}.scored_ok
    ARRAY JOIN [300, 900, 3600, 21600, 86400] AS window_s
)
WHERE t > newest - window_s
GROUP BY model, domain, window_s;
