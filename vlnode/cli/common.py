"""Helpers shared by the command modules: settings with a readable error."""

from __future__ import annotations

import argparse
import sys

from vlnode.settings import Settings, SettingsError, load_settings


def settings_or_exit(args: argparse.Namespace) -> Settings:
    """Load the settings; on a bad value print what is wrong and exit with status 2."""
    try:
        return load_settings(getattr(args, "config", None))
    except SettingsError as exc:
        print(f"vlnode: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
