"""Database engine, session factory and declarative base.

The URL comes from the environment (DATABASE_URL): the compose file sets it.
The schema is created only by Alembic migrations, never by create_all().
"""

import os
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import DeclarativeBase, sessionmaker

DEFAULT_DATABASE_URL = "postgresql+psycopg://app:app@localhost:5432/app"


def get_database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def make_engine(url: str) -> Engine:
    """Create an engine; for a SQLite file, make its parent folder if missing."""
    parsed = make_url(url)
    connect_args = {}
    if parsed.get_backend_name() == "sqlite":
        connect_args["check_same_thread"] = False
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError:
                # Left to fail on connect: /health then answers 503.
                pass
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True)


class Base(DeclarativeBase):
    pass


DATABASE_URL = get_database_url()
engine = make_engine(DATABASE_URL)
SessionLocal = sessionmaker(bind=engine, autoflush=False, expire_on_commit=False)
