"""Producer side: validates input, records runs in SQL, enqueues jobs, shows progress."""
