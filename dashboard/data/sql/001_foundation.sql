-- ConceptLens store, migration 1: cases, images, findings, readers, concepts, annotations, audit log.
-- Applied once; schema_version records it. Later migrations only add.

CREATE TABLE IF NOT EXISTS cases (
    case_id      VARCHAR PRIMARY KEY,
    source       VARCHAR NOT NULL,            -- synthetic | cbis-ddsm | mini-mias | ingest
    split        VARCHAR NOT NULL DEFAULT 'none',  -- train | val | test | none
    label        VARCHAR NOT NULL DEFAULT 'unknown', -- normal | benign | malignant | unknown
    description  VARCHAR NOT NULL DEFAULT '',
    patient_ref  VARCHAR NOT NULL DEFAULT '',  -- pseudonymous (keyed hash); no identifier is stored
    created_at   TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS images (
    image_id          VARCHAR PRIMARY KEY,
    case_id           VARCHAR NOT NULL REFERENCES cases(case_id),
    path              VARCHAR NOT NULL,              -- relative to the data dir (migration 6)
    sha256            VARCHAR NOT NULL,
    laterality        VARCHAR NOT NULL DEFAULT '',   -- L | R | ''
    view              VARCHAR NOT NULL DEFAULT '',   -- CC | MLO | ...
    rows              INTEGER NOT NULL,
    cols              INTEGER NOT NULL,
    pixel_spacing_mm  DOUBLE,
    modality          VARCHAR NOT NULL DEFAULT '',
    meta              JSON,                          -- de-identified header summary: no identifier, no free text
    created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE UNIQUE INDEX IF NOT EXISTS images_sha ON images(sha256);

CREATE TABLE IF NOT EXISTS findings (
    finding_id   VARCHAR PRIMARY KEY,
    image_id     VARCHAR NOT NULL REFERENCES images(image_id),
    concept      VARCHAR NOT NULL,
    pathology    VARCHAR NOT NULL DEFAULT 'unknown',  -- benign | malignant | unknown
    mask_path    VARCHAR,                              -- PNG mask, source pixels; NULL for image-level
    x0 INTEGER, y0 INTEGER, x1 INTEGER, y1 INTEGER,    -- bbox in source pixels
    cx DOUBLE, cy DOUBLE, radius DOUBLE,               -- circle findings (mini-MIAS)
    attributes   JSON,
    source       VARCHAR NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS readers (
    reader      VARCHAR PRIMARY KEY,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS concepts (
    name           VARCHAR PRIMARY KEY,
    colour         VARCHAR NOT NULL,
    lexicon_group  VARCHAR NOT NULL,
    description    VARCHAR NOT NULL DEFAULT '',
    builtin        BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp
);

CREATE TABLE IF NOT EXISTS annotations (
    annotation_id  VARCHAR PRIMARY KEY,
    image_id       VARCHAR NOT NULL REFERENCES images(image_id),
    concept        VARCHAR NOT NULL REFERENCES concepts(name),
    reader         VARCHAR NOT NULL REFERENCES readers(reader),
    -- the patch the drawing was made on, in model-space pixels of the image (see dashboard.imaging.Frame)
    patch_x0       INTEGER NOT NULL,
    patch_y0       INTEGER NOT NULL,
    patch_size     INTEGER NOT NULL,
    shape          VARCHAR NOT NULL,        -- polygon | freehand | rect
    geometry       JSON NOT NULL,           -- points in patch pixels
    mask_png       BLOB NOT NULL,           -- patch_size x patch_size, 1-bit PNG
    model_card     VARCHAR NOT NULL DEFAULT '',
    created_at     TIMESTAMP NOT NULL DEFAULT current_timestamp,
    deleted_at     TIMESTAMP
);

CREATE SEQUENCE IF NOT EXISTS audit_seq;
CREATE TABLE IF NOT EXISTS audit_log (
    seq        BIGINT PRIMARY KEY DEFAULT nextval('audit_seq'),
    logged_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
    actor      VARCHAR NOT NULL,
    action     VARCHAR NOT NULL,
    entity     VARCHAR NOT NULL,
    entity_id  VARCHAR NOT NULL,
    payload    JSON
);
