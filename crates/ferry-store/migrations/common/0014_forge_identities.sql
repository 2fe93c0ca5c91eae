-- Forge identities (issue 11): the forge accounts a user is, as `provider:login`
-- (lower case), each belonging to one user. Approval rules' `not: [author, triggerer]`
-- compare them with the forge account a delivery names, never with a git author string.
CREATE TABLE forge_identities (
    identity TEXT PRIMARY KEY,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX forge_identities_user ON forge_identities (user_id);
