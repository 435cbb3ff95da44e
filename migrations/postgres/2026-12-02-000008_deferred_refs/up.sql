-- What a deferred (or given-up) event waits for: the Stripe ids its payload names (PaymentIntent,
-- charge, …). A purchase's arrival wakes the events waiting for it through this index, instead
-- of scanning the payloads of every deferred and failed event. Filled when an event is deferred
-- (and, for events deferred before this migration, by the service right after it runs).
CREATE TABLE deferred_event_refs (
    stripe_id  TEXT NOT NULL,
    event_id   TEXT NOT NULL REFERENCES webhook_events (id),
    PRIMARY KEY (stripe_id, event_id)
);
CREATE INDEX deferred_event_refs_event_idx ON deferred_event_refs (event_id);
