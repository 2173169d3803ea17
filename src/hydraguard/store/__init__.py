"""The storage layer: every table's schema in one place (`schema`), and the Alembic migrations that create and
change it (`migrate`, `migrations/versions/`). See docs/storage.md."""
