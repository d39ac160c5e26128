-- 006: accuracy corrected by the labels already collected.

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
-- correction no longer depends on the estimator's calibration.
CREATE VIEW IF NOT EXISTS {db}.accuracy_corrected AS
SELECT model, domain, n, estimated, n_labelled, corrected, se,
    corrected - 1.96 * se AS lo, corrected + 1.96 * se AS hi, coverage
FROM
(
    SELECT model, domain, sum(nb) AS n, sum(sp) / n AS estimated, sum(nl) AS n_labelled,
        (sum(sp) + sumIf(nb * sd / nl, nl > 0)) / n AS corrected,
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
