-- Subscriptions (`fjord-subscriptions`): the state of each Subscription's delivery, the events
-- matched for it, and how far each change-log consumer has read. Events are numbered per
-- subscription in the same transaction that moves the dispatcher's cursor, so a change is
-- matched exactly once and a notification, once written here, survives any crash until it is
-- delivered. Not partitioned (small beside the versions); row-level security like every
-- tenant-scoped table.

-- One row per Subscription, created with its first version by the unit of work that writes it.
CREATE TABLE subscription_state (
    tenant     integer NOT NULL,
    id         text    NOT NULL,
    -- What the last client that wrote the Subscription may read (fjord-smart's access record).
    access     jsonb   NOT NULL,
    -- requested (handshake due), active, error, off: as the server last set it.
    status     text    NOT NULL DEFAULT 'requested',
    -- Events since the subscription started: the number of the last event matched.
    events     bigint  NOT NULL DEFAULT 0,
    -- Every event up to this number was delivered.
    delivered  bigint  NOT NULL DEFAULT 0,
    -- Consecutive failed deliveries, and the last one's reason.
    failures   integer NOT NULL DEFAULT 0,
    error      text,
    -- The change-log position of the Subscription version that started it: only later changes
    -- are matched.
    since_seq  bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, id)
);

CREATE TABLE subscription_event (
    tenant       integer     NOT NULL,
    subscription text        NOT NULL,
    number       bigint      NOT NULL,
    seq          bigint      NOT NULL,
    type         text        NOT NULL,
    id           text        NOT NULL,
    version      bigint      NOT NULL,
    at           timestamptz NOT NULL,
    -- The version is a delete (no body).
    deleted      boolean     NOT NULL DEFAULT false,
    -- References of the topic's notification shape (`include`): additional context.
    context      text[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant, subscription, number)
);

CREATE TABLE change_consumer (
    tenant integer NOT NULL,
    name   text    NOT NULL,
    cursor jsonb   NOT NULL,
    PRIMARY KEY (tenant, name)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['subscription_state', 'subscription_event', 'change_consumer'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_wall ON %I USING (tenant = fjord_current_tenant()) '
                       'WITH CHECK (tenant = fjord_current_tenant())', t);
    END LOOP;
END $$;
