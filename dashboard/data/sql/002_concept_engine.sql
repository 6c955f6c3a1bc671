-- Migration 2: unit labels, probe versions, cached per-image predictions.

CREATE TABLE IF NOT EXISTS unit_labels (
    model_card     VARCHAR NOT NULL,
    layer          VARCHAR NOT NULL,
    unit           INTEGER NOT NULL,
    concept        VARCHAR NOT NULL,
    iou            DOUBLE NOT NULL,
    annotation_id  VARCHAR NOT NULL,
    labeled_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model_card, layer, unit)
);

-- every IoU a drawing produced above the threshold: the raw material that labels are recomputed from
CREATE TABLE IF NOT EXISTS annotation_units (
    annotation_id  VARCHAR NOT NULL,
    model_card     VARCHAR NOT NULL,
    layer          VARCHAR NOT NULL,
    unit           INTEGER NOT NULL,
    iou            DOUBLE NOT NULL,
    PRIMARY KEY (annotation_id, model_card, layer, unit)
);

CREATE SEQUENCE IF NOT EXISTS probe_seq;
CREATE TABLE IF NOT EXISTS probes (
    version         BIGINT PRIMARY KEY DEFAULT nextval('probe_seq'),
    model_card      VARCHAR NOT NULL,
    layer           VARCHAR NOT NULL,
    concepts        JSON NOT NULL,       -- ordered list of concept names
    weights         BLOB NOT NULL,       -- safetensors bytes
    metrics         JSON NOT NULL,       -- per concept: auroc, n_drawings, n_images, ...
    annotation_ids  JSON NOT NULL,
    readers         JSON NOT NULL,
    created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp
);
