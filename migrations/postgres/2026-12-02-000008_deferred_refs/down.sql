DROP TABLE deferred_event_refs;
