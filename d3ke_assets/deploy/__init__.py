"""Deployment code locations and what they need: the Celery executor's location (`scale_defs`),
dagster_celery's run launcher location (`run_launcher_defs`), the workers' Celery app
(`celery_app`) with what they import before forking (`preload`), and the throwaway Redis,
PostgreSQL, Celery workers and run orchestrators that `d3ke bench scale` and the scale-out tests
start on loopback (`services`). docs/deploy/ describes a real deployment."""
