"""llmjobs: run language models over bulk content through Redis, Celery workers and a SQL store."""

__version__ = "0.1.0"
