-- Rotation inside a PKCS#11 token (issue 16): a key made by rotation or handover in the CA's token
-- is named by its label there instead of being sealed here.
ALTER TABLE issuing_cas ADD COLUMN key_label TEXT;
ALTER TABLE signing_keys ADD COLUMN key_label TEXT;
