"""What every action that changes control files shares: each setting's API input, made from
the settings table (the one place its name, bounds and meaning live); the change checked and
written in a worker thread (fsyncs, 10,000 routes), then the running service told to reread
them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sendworx.api.registry import Input, InputKind
from sendworx.backends import ServiceBackend
from sendworx.shared.control_files import update_settings
from sendworx.shared.errors import ValidationFailed
from sendworx.shared.instance import Instance
from sendworx.shared.settings import (
    IntegerSetting,
    NameSetting,
    Settings,
    SettingsError,
    read_settings,
    validate_integer,
    validate_name,
)


def setting_input(setting: IntegerSetting | NameSetting) -> Input:
    """The input an `update` action takes for one control file."""
    if isinstance(setting, IntegerSetting):
        return Input(
            setting.input_name,
            InputKind.INTEGER,
            lambda value: validate_integer(setting, value),
            f"{setting.meaning} (default {setting.default})",
            schema={"type": "integer", "minimum": setting.minimum, "maximum": setting.maximum},
        )
    return Input(
        setting.input_name,
        InputKind.STRING,
        lambda value: validate_name(setting, value),
        f"{setting.meaning} (control file {setting.control_file}; default {setting.default})",
    )


async def change_settings(
    instance: Instance, backend: ServiceBackend, changes: Mapping[str, object]
) -> Settings:
    """Write `changes` (all or nothing) and apply them; status 11 for any bad value."""

    def write_and_apply() -> Settings:
        settings = update_settings(instance.control_dir, changes)
        backend.apply_settings()
        return settings

    try:
        return await asyncio.to_thread(write_and_apply)
    except SettingsError as error:
        raise ValidationFailed(error.problems) from error


async def current_settings(instance: Instance) -> Settings:
    return await asyncio.to_thread(read_settings, instance.control_dir)
