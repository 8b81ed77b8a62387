"""Default status of the loop's schedules and sensors: running, unless
``SPAM_AUTOMATIONS_STOPPED`` names one (the UI's toggle still overrides either way)."""

import dagster as dg

from spam_serving.settings import get_settings


def _stopped(name: str) -> bool:
    return name in get_settings().automations_stopped


def schedule_status(name: str) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.STOPPED if _stopped(name) else dg.DefaultScheduleStatus.RUNNING


def sensor_status(name: str) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.STOPPED if _stopped(name) else dg.DefaultSensorStatus.RUNNING
