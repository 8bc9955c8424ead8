from pydantic_settings import BaseSettings


class AppBase(BaseSettings):
    """What every process of the app reads (the server, Alembic)."""

    database_url: str
