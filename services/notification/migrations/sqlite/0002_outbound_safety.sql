-- Webhook signing secrets are stored sealed (AES-256-GCM; see storage/secrets.rs): `v1:`
-- followed by the base64 of nonce, ciphertext and tag. The key is not in the database, so the
-- rows stored in plaintext before this version are sealed by the service when it starts, right
-- after the migrations. From now on the database refuses a secret written in any other form:
-- the backstop of the code that seals. Only `secret` is checked (`previous_secret` only ever
-- receives a former `secret`), and only when it is written.
CREATE TRIGGER subscriptions_secret_sealed_on_insert BEFORE INSERT ON subscriptions
WHEN NEW.secret NOT LIKE 'v1:%'
BEGIN
    SELECT RAISE(ABORT, 'subscriptions: signing secrets are stored sealed');
END;
CREATE TRIGGER subscriptions_secret_sealed_on_update BEFORE UPDATE OF secret ON subscriptions
WHEN NEW.secret NOT LIKE 'v1:%'
BEGIN
    SELECT RAISE(ABORT, 'subscriptions: signing secrets are stored sealed');
END;
