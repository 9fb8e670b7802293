-- The domain: who uses boardcast and what they work on.
--
-- Every table here is meant to be written with plain SQL by any client (the REST API, a script, an admin
-- tool, psql). Ids are UUIDs with defaults and bookkeeping columns (version, updated_at, position) are kept by
-- triggers (sql/functions/domain.sql), so `INSERT INTO tasks (project_id, title) VALUES ('<uuid>', 'x')` is a
-- complete, correct write. The change feed's tables are in 0002_feed.sql, its triggers in sql/functions/feed.sql.

CREATE TABLE users (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- API tokens. Only a SHA-256 of the token is stored; the token itself is shown once, when issued.
-- This table has no feed trigger: secrets never enter the feed.
CREATE TABLE api_tokens (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    label      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);
CREATE INDEX api_tokens_user_idx ON api_tokens (user_id);

CREATE TABLE projects (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE project_members (
    project_id uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'member')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user_idx ON project_members (user_id);

CREATE TABLE tasks (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id  uuid NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    title       text NOT NULL CHECK (length(title) BETWEEN 1 AND 500),
    -- Bounded so that an event (the row, and the old row on update) stays a few megabytes at most.
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 200000),
    status      text NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'in_progress', 'done')),
    assignee_id uuid REFERENCES users (id) ON DELETE SET NULL,
    -- A card's place on the board. Fractional, so a card can be moved between two others without renumbering.
    -- Left NULL by the writer, it becomes "after the last card of the project" (boardcast_task_defaults).
    -- Bounded so that every client's JSON parser can read it back (no NaN, no infinities, no 1e308).
    position    double precision NOT NULL CHECK (position BETWEEN -1e15 AND 1e15),
    -- Bumped on every update, by any writer; the API uses it to refuse stale writes (409).
    version     bigint NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Lets comments reference (task, project) together, so a comment's project always is its task's project.
    UNIQUE (id, project_id)
);
CREATE INDEX tasks_board_idx ON tasks (project_id, position, created_at, id);
CREATE INDEX tasks_assignee_idx ON tasks (assignee_id) WHERE assignee_id IS NOT NULL;

CREATE TABLE comments (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id    uuid NOT NULL,
    -- Filled from the task when left NULL (boardcast_comment_defaults); kept so the feed can route a comment
    -- without a join.
    project_id uuid NOT NULL,
    author_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 20000),
    version    bigint NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (task_id, project_id) REFERENCES tasks (id, project_id) ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX comments_task_idx ON comments (task_id, created_at, id);
