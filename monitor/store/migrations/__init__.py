"""Alembic migrations of the monitor's database, run by `monitor.store.db.upgrade`.

A Python package (with `versions/` as a subpackage) so that setuptools ships every revision without
package-data. `script.py.mako` is only used when writing a new revision in a checkout.
"""
