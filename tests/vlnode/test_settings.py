"""The settings object: embedded defaults, the documented file, overrides, clear errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from vlnode.settings import REPO_CONF_DIR, Settings, SettingsError, load_settings


def test_defaults_match_the_documented_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLNODE_CONFIG", raising=False)
    embedded = load_settings()
    from_file = load_settings(REPO_CONF_DIR / "vlnode.toml")
    assert embedded == from_file
    assert (embedded.node.ae_title, embedded.node.port) == ("VLNODE", 11112)
    assert embedded.store.data_dir == Path("vlnode-data")
    # Every key in the file is a real setting (no stale documentation).
    document = tomllib.loads((REPO_CONF_DIR / "vlnode.toml").read_text())
    for section, values in document.items():
        assert section in Settings.model_fields
        for key in values:
            assert key in type(getattr(embedded, section)).model_fields


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[node]\nport = 4000\nae_title = "FILEAE"\n')
    monkeypatch.setenv("VLNODE_NODE__PORT", "4001")
    settings = load_settings(config)
    assert (settings.node.port, settings.node.ae_title) == (4001, "FILEAE")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[node]\nport = 70000\n", ["node.port", "70000", "less than or equal to 65535"]),
        ('[node]\nae_title = "A\\\\B"\n', ["node.ae_title", "backslash"]),
        ('[node]\nae_title = "WAY_TOO_LONG_AE_TITLE"\n', ["node.ae_title", "16"]),
        ('[store]\ndatabase_url = "mysql://x"\n', ["store.database_url", "postgresql"]),
        ("[study]\nstable_seconds = -1\n", ["study.stable_seconds", "greater than 0"]),
        ("[node]\nprot = 1\n", ["node.prot", "Extra inputs"]),
        (
            '[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "h"\nport = 0\n',
            ["destinations.0.port"],
        ),
        ("[node\n", ["cannot read configuration file"]),
    ],
)
def test_bad_values_name_key_value_and_rule(tmp_path: Path, text: str, names: list[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as info:
        load_settings(config)
    for name in names:
        assert name in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nowhere\.toml"):
        load_settings(tmp_path / "nowhere.toml")


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.node.port = 1  # type: ignore[misc]
