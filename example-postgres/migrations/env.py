"""Alembic environment of the example app.

URL: an explicit sqlalchemy.url set on the Config (programmatic use) wins;
otherwise env DATABASE_URL (compose.yaml sets it to the db service).
target_metadata is the models' metadata, so `alembic check` reports drift
between the models and the migrations.
"""

from logging.config import fileConfig

import app.models  # noqa: F401 - registers the tables on Base.metadata
from alembic import context
from app.db import Base, get_database_url, make_engine

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_database_url()


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = make_engine(database_url())
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=True,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
