"""The analyst case desk: alerts from ``risk.alerts`` into a queue analysts work through, their
dispositions out to ``risk.labels`` as the labels the trainer learns from (docs/desk.md).

* :mod:`.tables` - the PostgreSQL schema (SQLAlchemy); :mod:`.migrations` - Alembic revisions
* :mod:`.intake` - the alert consumer: stores each alert once and groups alerts into cases
* :mod:`.outbox` - dispositions and their label rows in one transaction; the relay publishes
* :mod:`.app` and :mod:`.pages` - the web application; :mod:`.auth` - users, sessions, CSRF
"""
