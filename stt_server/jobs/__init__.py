"""Jobs: the record, the queue, the lifecycle that owns every status change, the workers, intake, the store and its events, the spool, recovery, retention and webhooks."""
