"""Entry points: the `auditlog` CLI, the settings object, and how jobs are launched."""
