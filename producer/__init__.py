"""Producer side: validates input, records runs in SQL, enqueues chords, shows progress."""
