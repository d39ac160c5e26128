-- 001: base tables. {db} is replaced by the target database.
-- scored: one row per scored response (scored.v1). Its columns follow from
-- schemas.Scored (schemas.ClickHouseColumns); a test keeps them in step.
-- Idempotency: ReplacingMergeTree keyed by (model, hour, trace_id) collapses a
-- redelivered trace at merge time; every view reads `scored FINAL`, so
-- duplicates never reach an estimate, count or alarm even before merges.
CREATE TABLE IF NOT EXISTS {db}.scored (
    trace_id String,
    ts DateTime('UTC'),
    ts_ms UInt16,
    model String,
    provider String,
    logprobs_mode String,
    temperature Float32,
    top_p Float32,
    domain Nullable(String),
    prompt Nullable(String),
    attributes_keys Array(String),
    attributes_values Array(String),
    finish_reason String,
    correct Nullable(UInt8),
    n_tokens Int32,
    mean Float64,
    std Float64,
    max Float64,
    q10 Float64,
    q25 Float64,
    q50 Float64,
    q75 Float64,
    q90 Float64,
    skew Float64,
    kurt Float64,
    sea Float64,
    nll_mean Float64,
    nll_max Float64,
    nll_sum Float64,
    perplexity Float64,
    min_token_prob Float64,
    margin_mean Float64,
    h_top5 Float64,
    p_correct Nullable(Float64),
    estimator_version Nullable(String),
    cluster_id Nullable(Int32),
    cluster_label Nullable(String),
    cluster_distance Nullable(Float32),
    status String,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (model, toStartOfHour(ts), trace_id);

-- labels: ground truth (label.v1) from labelers or any other source. The
-- latest label of a trace (by ts) wins; views deduplicate with argMax.
CREATE TABLE IF NOT EXISTS {db}.labels (
    trace_id String,
    correct UInt8,
    source String,
    ts DateTime('UTC'),
    ts_ms UInt16,
    inserted_at DateTime('UTC') DEFAULT now()
) ENGINE = ReplacingMergeTree
ORDER BY trace_id;

-- label_requests: traces already sent out for labeling (entrowatch labels
-- requests); the labeling queue skips them.
CREATE TABLE IF NOT EXISTS {db}.label_requests (
    trace_id String,
    model String,
    domain String,
    requested_at DateTime('UTC'),
    batch String
) ENGINE = ReplacingMergeTree
ORDER BY trace_id;

-- alarm_settings: the alarm views use the row with the latest updated_at.
-- Change a setting by inserting a full row with a newer updated_at.
CREATE TABLE IF NOT EXISTS {db}.alarm_settings (
    updated_at DateTime('UTC'),
    window_s UInt32,            -- evaluation window (bucket) length, seconds
    baseline_windows UInt32,    -- trailing windows forming the baseline / reference period
    lookback_windows UInt32,    -- how many windows back from the newest trace the views look
    min_n UInt32,               -- fewest responses in a window (and its baseline) to evaluate
    drop_k Float64,             -- accuracy_drop: fire when the drop exceeds drop_k standard errors...
    min_drop Float64,           -- ...and at least min_drop (absolute accuracy)
    psi_bin_width Float64,      -- psi: histogram bin width of the entropy features (nats)
    psi_threshold Float64,      -- psi: fire above this population stability index
    cusum_k Float64,            -- cusum: allowance per window, in standard errors
    cusum_h Float64,            -- cusum: decision threshold, in standard errors
    calib_k Float64,            -- calibration_gap: fire when |estimated - realised| exceeds calib_k SE...
    calib_min_gap Float64,      -- ...and at least calib_min_gap
    calib_min_labels UInt32,    -- calibration_gap: fewest labelled responses to evaluate
    surge_k Float64,            -- unclustered_surge: fire when the share rises by surge_k SE...
    surge_min_increase Float64, -- ...and by at least this much (absolute share)
    queue_lookback_s UInt32     -- labeling_queue: seconds back from the newest trace
) ENGINE = MergeTree
ORDER BY updated_at;

INSERT INTO {db}.alarm_settings (updated_at, window_s, baseline_windows, lookback_windows, min_n,
    drop_k, min_drop, psi_bin_width, psi_threshold, cusum_k, cusum_h, calib_k, calib_min_gap,
    calib_min_labels, surge_k, surge_min_increase, queue_lookback_s)
SELECT toDateTime(0, 'UTC'), 3600, 6, 48, 50, 3, 0.05, 0.25, 0.25, 0.5, 5, 3, 0.05, 30, 4, 0.1, 86400;

-- alarm_state: one row per alarm key and change, written by `entrowatch
-- alarms`; the newest version of a key is its state.
CREATE TABLE IF NOT EXISTS {db}.alarm_state (
    kind String,
    model String,
    domain String,
    feature String,
    episode UInt32,
    state String,               -- firing | resolved
    window_start DateTime('UTC'),
    value Float64,
    baseline Float64,
    threshold Float64,
    n UInt64,
    changed_at DateTime('UTC'),
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (kind, model, domain, feature);
