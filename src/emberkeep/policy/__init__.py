"""Policy: the strategy's tables as config, interpreted (retention; schedules and objectives later).

Pure functions of config values, snapshots and a time: no I/O, no clock reads.
"""
