-- Group commit: a pool's writer expires the due holds of its own pool under the pool's lock,
-- so due holds are found per pool.
CREATE INDEX reservations_held_by_pool_expiry ON reservations (pool_id, expires_us) WHERE state = 'HELD';
