"""The Celery app: configured from Django settings (CELERY_*), tasks autodiscovered."""

import os

from celery import Celery, bootsteps
from celery.signals import task_postrun, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "claworc_site.settings")

app = Celery("claworc")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _faster_embedded_broker(sender, **kwargs):
    # The SQLite broker polls; its 1 s default makes every action feel slow. The interval can only
    # be set on the transport class (passing it in broker_transport_options crashes the worker).
    if sender.conf.broker_url.startswith("sqla+"):
        from kombu.transport import sqlalchemy

        sqlalchemy.Transport.polling_interval = 0.05


@app.on_after_configure.connect
def _reconcile_on_beat(sender, **kwargs):
    # Drift (a container removed, stopped or crashed outside Claworc) is found by this run, every
    # CLAWORC_RECONCILE_INTERVAL seconds. A run not started within one interval is dropped: the
    # next one observes the same things, so a backlog of them would only be wasted work.
    from django.conf import settings

    interval = float(settings.CLAWORC_RECONCILE_INTERVAL)
    sender.add_periodic_task(
        interval, sender.signature("instances.tasks.reconcile_all", options={"expires": interval}),
        name="reconcile all instances",
    )
    usage = float(settings.CLAWORC_USAGE_INTERVAL)
    sender.add_periodic_task(
        usage, sender.signature("instances.tasks.sample_usage", options={"expires": usage}),
        name="sample resource usage",
    )


@app.on_after_configure.connect
def _schedules_on_beat(sender, **kwargs):
    # Run hours and idle stop. A late run applies each edge once, a dropped one costs an
    # interval: the rows remember what was applied (instances/services/schedules.py).
    from django.conf import settings

    interval = float(settings.CLAWORC_SCHEDULE_INTERVAL)
    sender.add_periodic_task(
        interval, sender.signature("instances.tasks.apply_schedules",
                                   options={"expires": interval}),
        name="run hours and idle stop",
    )


#: Seconds between two housekeeping runs (old Activity and orphan records are deleted).
EXPIRE_EVERY = 24 * 3600.0


@app.on_after_configure.connect
def _expire_records_on_beat(sender, **kwargs):
    sender.add_periodic_task(
        EXPIRE_EVERY, sender.signature("instances.tasks.expire_records",
                                       options={"expires": EXPIRE_EVERY}),
        name="expire old records",
    )


class Heartbeat(bootsteps.StartStopStep):
    """The worker's main process writes a heartbeat every few seconds (see /health)."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        from instances.services.liveness import HEARTBEAT_SECONDS

        self.beat(worker)
        self.tref = worker.timer.call_repeatedly(HEARTBEAT_SECONDS, self.beat, (worker,))

    def stop(self, worker):
        if self.tref:
            self.tref.cancel()

    def beat(self, worker):
        from django.db import close_old_connections

        from instances.services.liveness import worker_heartbeat

        try:
            close_old_connections()
            worker_heartbeat(hostname=worker.hostname)
        except Exception:  # noqa: BLE001 - a missed beat shows on /health; never kill the worker
            import logging

            logging.getLogger(__name__).warning("heartbeat not written", exc_info=True)


app.steps["worker"].add(Heartbeat)


@task_postrun.connect
def _task_finished(sender=None, **kwargs):
    # In the pool process that ran it: a worker that finishes tasks is making progress.
    hostname = getattr(getattr(sender, "request", None), "hostname", None)
    if not hostname or sender.app.conf.task_always_eager:
        return
    from instances.services.liveness import worker_task_finished

    try:
        worker_task_finished(hostname=hostname)
    except Exception:  # noqa: BLE001 - liveness bookkeeping must not fail a task
        import logging

        logging.getLogger(__name__).warning("progress not recorded", exc_info=True)


@worker_shutdown.connect
def _worker_gone(sender=None, **kwargs):
    hostname = getattr(sender, "hostname", None)
    if hostname:
        from instances.services.liveness import worker_gone

        try:
            worker_gone(hostname=hostname)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
