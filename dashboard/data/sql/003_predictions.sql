-- Migration 3: cached image-level predictions per model card (the worklist's score column).
CREATE TABLE IF NOT EXISTS predictions (
    model_card    VARCHAR NOT NULL,
    weights_sha   VARCHAR NOT NULL,
    image_id      VARCHAR NOT NULL,
    score         DOUBLE NOT NULL,        -- probability of the card's positive class, image level
    top_patches   JSON NOT NULL,          -- [[x0, y0, size, prob], ...] in model pixels
    computed_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (model_card, weights_sha, image_id)
);
