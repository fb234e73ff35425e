"""Scheduled duties: the daily report, the nightly backup, the weekly restore drill and the watch.

Each duty runs exactly once per slot across every replica: the replica whose INSERT into duty_runs
(unique on duty and slot) succeeds queues it as a durable job; runners run it as the system user
`scheduler`, through the same pipeline a person's commands walk. `service.py` is the scheduler, `flows.py` what
each duty does, `watch.py` the watch's memory. Imports the frame, the jobs, the stack and the other domains;
nothing imports this package but the runtime, the runner and its commands.
"""
