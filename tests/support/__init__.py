"""Shared test helpers: real databases (SQLite, PostgreSQL) and real server processes."""
