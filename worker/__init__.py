"""Worker side: the Celery app and the tasks that make the paid calls."""
