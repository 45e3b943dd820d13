"""The former name of :mod:`fastmlr.io`, kept so that ``from fastmlr.pool_io import
read_pool`` goes on working."""

from .io import MISSING, Pool, read_pool, tasks_from_frame, write_pool

__all__ = ["Pool", "read_pool", "write_pool", "tasks_from_frame", "MISSING"]
