"""Running the alembic migrations: how the controller creates and upgrades
its schema (never metadata.create_all)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

INI = Path(__file__).with_name("alembic.ini")


def alembic_config(engine: Engine) -> Config:
    """An alembic Config that works on engine's database."""
    cfg = Config(str(INI))
    # The options go through ConfigParser, where % starts an interpolation: a
    # URL's percent-encoded characters (a password's "%40") must be doubled.
    url = engine.url.render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrates the database to revision."""
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Migrates the database back to revision."""
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def check(engine: Engine) -> None:
    """Raises when the models and the migrations differ."""
    with engine.begin() as conn:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = conn
        command.check(cfg)
