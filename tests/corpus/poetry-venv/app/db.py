from pgvector.sqlalchemy import Vector
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.config import settings

EMBEDDING_MODEL = settings.embedding_model


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(200))
    embedding = mapped_column(Vector(3), nullable=True)


engine = create_engine(settings.database_url)
