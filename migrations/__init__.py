"""Alembic migrations (`reach db upgrade`); packaged so an installed Reach can migrate itself."""
