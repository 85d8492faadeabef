"""What every action that changes control files shares: the change is checked and written in a
worker thread (fsyncs, 10,000 routes), then the running service is told to reread them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from sendworx.backends import ServiceBackend
from sendworx.shared.control_files import update_settings
from sendworx.shared.errors import ValidationFailed
from sendworx.shared.instance import Instance
from sendworx.shared.settings import Settings, SettingsError, read_settings


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
