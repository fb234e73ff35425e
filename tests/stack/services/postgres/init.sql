-- Seed of the flowstate_ai database, run once when the data directory is created.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

CREATE TABLE users (
    id serial PRIMARY KEY,
    email text UNIQUE NOT NULL,
    name text NOT NULL,
    role text NOT NULL DEFAULT 'user',
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO users (email, name, role) VALUES
    ('admin@example.com',  'Ada Admin',    'admin'),
    ('alice@example.com',  'Alice Archer', 'user'),
    ('bob@example.com',    'Bob Baker',    'user'),
    ('carol@example.com',  'Carol Chen',   'user'),
    ('dave@example.com',   'Dave Diaz',    'user');
