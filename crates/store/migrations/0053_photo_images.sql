-- Photos as images: the round downloads a changed directory photo, stores it content-addressed
-- (sha256) in the object store, and the snapshot row and the card carry the hash and the content
-- type. The card's columns name the image the card shows; they follow the directory only while
-- the card's photo is directory-managed (a local photo keeps them as they are).
ALTER TABLE directory_users
    ADD COLUMN photo_sha256       text NULL CHECK (photo_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN photo_content_type text NULL CHECK (length(photo_content_type) <= 255);

ALTER TABLE cards
    ADD COLUMN photo_sha256       text NULL CHECK (photo_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN photo_content_type text NULL CHECK (length(photo_content_type) <= 255);

-- The image sweep asks, for a page of stored hashes, which ones some row still references.
CREATE INDEX cards_photo_sha256 ON cards (photo_sha256) WHERE photo_sha256 IS NOT NULL;
CREATE INDEX directory_users_photo_sha256 ON directory_users (photo_sha256)
    WHERE photo_sha256 IS NOT NULL;
