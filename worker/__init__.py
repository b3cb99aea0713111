"""Reach's Celery side: `celery -A worker worker`, `celery -A worker beat`, `celery -A worker flower`."""

from worker.celery import app

__all__ = ["app"]
