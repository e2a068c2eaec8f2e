"""Alembic revisions of the desk's schema, shipped inside the package so an installed
riskstream upgrades its database with `riskstream desk db upgrade` (no alembic.ini needed)."""
