-- Migration 4: records of dissection runs (dataset statistics on disk) and TCAV runs.

-- one row per finished dataset-statistics computation; the numbers live in `path` (safetensors)
CREATE TABLE IF NOT EXISTS dissection_runs (
    key           VARCHAR PRIMARY KEY,   -- hash of model card, weights, layer, data, settings
    model_card    VARCHAR NOT NULL,
    weights_sha   VARCHAR NOT NULL,
    layer         VARCHAR NOT NULL,
    data_key      VARCHAR NOT NULL,
    quantile      DOUBLE NOT NULL,
    top_k         INTEGER NOT NULL,
    n_patches     BIGINT NOT NULL,
    n_units       INTEGER NOT NULL,
    sample_rate   DOUBLE NOT NULL,       -- 1.0: thresholds are exact quantiles over every position
    path          VARCHAR NOT NULL,
    created_at    TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE IF NOT EXISTS tcav_seq;
CREATE TABLE IF NOT EXISTS tcav_runs (
    run_id         BIGINT PRIMARY KEY DEFAULT nextval('tcav_seq'),
    probe_version  BIGINT NOT NULL,
    model_card     VARCHAR NOT NULL,
    layer          VARCHAR NOT NULL,
    target         INTEGER NOT NULL,
    results        JSON NOT NULL,        -- per concept: score, magnitude, p_value, significant, ...
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);
