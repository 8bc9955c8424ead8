from app.settings_base import AppBase


class Settings(AppBase):
    embedding_model: str | None = None


settings = Settings()
