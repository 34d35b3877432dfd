-- Pruning of finished deliveries and of events (notification.delivery_retention_ms): events
-- are pruned from the oldest on, and the feed remembers the last position pruned, so that a
-- stream asked to resume from an older cursor is told it missed events (CURSOR_EXPIRED).
ALTER TABLE feed_head ADD COLUMN pruned_through_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX deliveries_by_event_seq ON deliveries (event_seq);
CREATE INDEX deliveries_finished ON deliveries (updated_us) WHERE state IN ('DELIVERED', 'CANCELLED', 'DEAD_LETTERED');
