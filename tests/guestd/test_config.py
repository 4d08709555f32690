from __future__ import annotations

import logging
from pathlib import Path

import pytest

from guestd import config
from guestd.config import ConfigError, FileConfig

PACKAGED = Path(__file__).resolve().parents[2] / "guestd/packaging/guestd.conf"


def test_missing_file_means_defaults(tmp_path: Path):
    assert config.load(tmp_path / "nope.conf") == FileConfig()


def test_the_packaged_file_sets_nothing():
    """Everything in the shipped conffile is commented out: it documents the defaults."""
    assert config.load(PACKAGED) == FileConfig()


def test_every_setting(tmp_path: Path):
    path = tmp_path / "guestd.conf"
    path.write_text(
        "[guestd]\n"
        "port = /dev/vport0p1\n"
        "heartbeat_interval = 2.5  # inline comment\n"
        "log_level = debug\n"
        "power_commands = no\n"
        "[applications]\n"
        "include = linux-image-*, cloud-init\n"
        "    virtplane-guestd\n"
    )
    assert config.load(path) == FileConfig(
        port=Path("/dev/vport0p1"),
        heartbeat_interval=2.5,
        log_level="DEBUG",
        power_commands=False,
        applications_include=("linux-image-*", "cloud-init", "virtplane-guestd"),
    )


@pytest.mark.parametrize(
    "text",
    [
        "[guestd]\nheartbeat_interval = 0\n",
        "[guestd]\nheartbeat_interval = soon\n",
        "[guestd]\nheartbeat_interval = nan\n",
        "[guestd]\nheartbeat_interval = 3601\n",
        "[guestd]\nlog_level = chatty\n",
        "[guestd]\npower_commands = perhaps\n",
        "no section header\n",
        "[guestd]\nport = a\nport = b\n",
    ],
)
def test_bad_values_are_errors(text: str):
    with pytest.raises(ConfigError):
        config.parse(text, "test.conf")


def test_unknown_keys_are_warned_about(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="guestd.config"):
        parsed = config.parse("[guestd]\nfuture_key = 1\n[future]\nx = 1\n", "test.conf")
    assert parsed == FileConfig()
    assert "future_key" in caplog.text and "[future]" in caplog.text


def test_too_many_patterns():
    with pytest.raises(ConfigError):
        config.parse("[applications]\ninclude = " + " ".join(["p"] * 201) + "\n")


def test_unreadable_file_is_an_error(tmp_path: Path):
    with pytest.raises(ConfigError):
        config.load(tmp_path)  # a folder


def test_oversized_file_is_an_error(tmp_path: Path):
    path = tmp_path / "big.conf"
    path.write_text("#" * (config.MAX_FILE_BYTES + 1))
    with pytest.raises(ConfigError):
        config.load(path)
