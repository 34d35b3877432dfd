-- Webhook signing secrets are stored sealed (AES-256-GCM; see storage/secrets.rs): `v1:`
-- followed by the base64 of nonce, ciphertext and tag. The key is not in the database, so the
-- rows stored in plaintext before this version are sealed by the service when it starts, right
-- after the migrations. From now on the database refuses a secret written in any other form:
-- the backstop of the code that seals. Only `secret` is checked (`previous_secret` only ever
-- receives a former `secret`), and only when it is written, so that the counters of a row the
-- start-up pass had to leave (a malformed secret, reported) keep working.
CREATE FUNCTION subscriptions_secret_sealed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.secret NOT LIKE 'v1:%' THEN
        RAISE EXCEPTION 'subscriptions: signing secrets are stored sealed';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER subscriptions_secret_sealed BEFORE INSERT OR UPDATE OF secret ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION subscriptions_secret_sealed();
