-- Tokens may expire. A token past `expires_at` is refused like a revoked one, and WebSocket connections opened
-- with it close at that moment. NULL: valid until revoked (operators' tokens, unless issued with --expires-in).
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz;

-- The active tokens of a user, counted each time the API issues one (a user may hold a limited number).
CREATE INDEX api_tokens_active_idx ON api_tokens (user_id) WHERE revoked_at IS NULL;
