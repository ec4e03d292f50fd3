"""The Celery app: configured from Django settings (CELERY_*), tasks autodiscovered."""

import os

from celery import Celery

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


#: Seconds between two housekeeping runs (old Activity and orphan records are deleted).
EXPIRE_EVERY = 24 * 3600.0


@app.on_after_configure.connect
def _expire_records_on_beat(sender, **kwargs):
    sender.add_periodic_task(
        EXPIRE_EVERY, sender.signature("instances.tasks.expire_records",
                                       options={"expires": EXPIRE_EVERY}),
        name="expire old records",
    )
