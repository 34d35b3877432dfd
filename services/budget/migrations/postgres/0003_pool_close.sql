-- A pool closes at the end of its program year: no new holds, existing holds may settle.
ALTER TABLE pools ADD COLUMN closed_us BIGINT;
ALTER TABLE pools ADD COLUMN close_reason TEXT;
