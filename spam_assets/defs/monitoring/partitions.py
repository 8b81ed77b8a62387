"""The hourly partitions shared by ``inference_log``, ``drift_report`` and their schedule.

``end_offset=1`` makes the current (still filling) hour a partition, so an operator or a test
can look at traffic from the last minutes; the schedule targets the last complete hour.
"""

import dagster as dg

from spam_serving.settings import get_settings

HOURLY = dg.HourlyPartitionsDefinition(start_date=get_settings().monitoring_start, end_offset=1)
