-- The attachment bytes a device uploaded in the last day (limits.attachment_bytes_per_day_max).
CREATE INDEX blobs_by_uploader ON blobs (uploader, created_at);
