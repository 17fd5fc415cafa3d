"""Alembic environment: runs migrations on the connection controlplane.db.migrate hands over."""

from alembic import context
from sqlalchemy import create_engine

from controlplane.db.base import Base
import controlplane.db.models  # noqa: F401  (registers the tables)
import controlplane.history  # noqa: F401  (the usage history table shares the metadata)

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _migrate(conn)
        return
    _migrate(connection)


def _migrate(conn) -> None:  # noqa: ANN001
    context.configure(connection=conn, target_metadata=target_metadata,
                      render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
