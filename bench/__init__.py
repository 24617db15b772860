"""The pipeline benchmark (SPEC 11): `python -m bench [--quick] [--json]`.

It starts the production topology (the Procfile's `web`, `poller` and `worker`
processes), a fast receiver of its own, and measures in one run the physical limit of
the machine (plain aiohttp POSTing straight to the receiver) and the pipeline (surveys
created through the API, deliveries counted at the receiver).

Modules: `cli` (options), `run` (one run, set-up to teardown), `stack` (the processes
it starts and always stops), `receiver`, `baseline`, `pipeline` (the phases), `api`
(the client side), `stats`, `report`, `progress`, and `profile`, which summarises
the py-spy stacks that `--profile DIR` records. `--soak MINUTES` runs `soak` instead:
steady load, `sampling` of each process's memory and descriptors, `soak_report`.
"""
