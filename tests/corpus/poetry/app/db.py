import os

from pgvector.sqlalchemy import Vector
from sqlalchemy import Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DATABASE_URL = os.environ["DATABASE_URL"]
EMBEDDING_MODEL = os.getenv("EMBEDDING_MODEL")


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(200))
    embedding = mapped_column(Vector(3), nullable=True)


engine = create_engine(DATABASE_URL)
