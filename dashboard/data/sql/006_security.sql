-- Migration 6: no drawing replayed into the wrong database, verified image files, no PHI at rest.
-- * store_identity: the database's id, drawn once; every journal record names it (dashboard.data.journal).
-- * images: the stored file's size and mtime (the integrity check's fast path; the SHA-256 decides) and
--   source_key, a keyed hash (HMAC with the installation's pseudonym key) of the file an image was ingested
--   from, so a second ingest adds nothing without storing anything that identifies that file.
-- * images.path and findings.mask_path hold paths relative to the data dir; the store rewrites older
--   absolute ones when it opens (Store.migrate), and open_store copies images from outside the data dir in.

CREATE TABLE IF NOT EXISTS store_identity (
    db_id       VARCHAR PRIMARY KEY,
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
INSERT INTO store_identity (db_id)
    SELECT gen_random_uuid()::VARCHAR WHERE NOT EXISTS (SELECT 1 FROM store_identity);

ALTER TABLE images ADD COLUMN IF NOT EXISTS file_size BIGINT;
ALTER TABLE images ADD COLUMN IF NOT EXISTS file_mtime_ns BIGINT;
ALTER TABLE images ADD COLUMN IF NOT EXISTS source_key VARCHAR DEFAULT '';

COMMENT ON COLUMN images.path IS 'relative to the data dir: never an absolute path (folder names often name the patient)';
COMMENT ON COLUMN images.meta IS 'de-identified header summary: no identifier, no free text (DICOM PS3.15 Basic profile)';
COMMENT ON COLUMN cases.patient_ref IS 'pseudonymous: a keyed hash of the PatientID; no identifier is stored';
