"""The worker: Celery app, process launcher, chunk consumer, micro-batching and job kinds.

Modules that import torch are imported only by worker processes, never at package import.
"""
