-- A suspended tenant's requests are refused (503) while its data stays as it is; set and
-- cleared by an administrator.
ALTER TABLE tenant ADD COLUMN suspended_at timestamptz;
