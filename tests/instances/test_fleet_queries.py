"""What a page or a bulk action costs in queries does not grow with the fleet or the selection.

The admin's actions and bulk deletes run a constant number of queries per batch; the changelist
stays within 10 queries at 1,000 instances (docs/performance.md).
"""

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from instances.models import Activity, Instance, PortAllocation

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:instances_instance_changelist")


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("root-fleet", password="pw-fleet-long-enough")
    client.force_login(user)
    return user


def _make(prefix, n, **fields):
    Instance.objects.bulk_create(
        Instance(display_name=f"{prefix} {i}", name=f"bot-{prefix}-{i:04d}", **fields)
        for i in range(n))
    base = 40000 + 2 * PortAllocation.objects.count()
    PortAllocation.objects.bulk_create(
        PortAllocation(instance=o, port_chrome=base + 2 * i, port_terminal=base + 2 * i + 1)
        for i, o in enumerate(Instance.objects.filter(name__startswith=f"bot-{prefix}-")))
    return list(Instance.objects.filter(name__startswith=f"bot-{prefix}-"))


def _queries_of(client, django_assert_max_num_queries, action, objs, **extra):
    with django_assert_max_num_queries(1000) as counted:
        response = client.post(CHANGELIST, {
            "action": action, "_selected_action": [o.pk for o in objs], **extra})
    assert response.status_code in (200, 302), response.status_code
    return len(counted.captured_queries)


@pytest.mark.parametrize(("action", "fields", "extra"), [
    ("start_instances", {"status": "stopped", "desired_state": "stopped"}, {}),
    ("stop_instances", {"status": "running"}, {}),
    ("restart_instances", {"status": "running"}, {}),
    ("recreate_instances", {"status": "running"}, {}),
    ("refresh_instances", {"status": "running"}, {}),
    ("delete_keeping_volumes", {"status": "running"}, {"confirm": "yes"}),
    ("delete_with_volumes", {"status": "running"}, {"confirm": "yes"}),
])
def test_a_bulk_action_costs_the_same_queries_for_10_and_for_100(
        client, staff, django_assert_max_num_queries, action, fields, extra):
    few = _queries_of(client, django_assert_max_num_queries, action,
                      _make("few", 10, **fields), **extra)
    many = _queries_of(client, django_assert_max_num_queries, action,
                       _make("many", 100, **fields), **extra)
    assert many == few, (action, few, many)
    assert Activity.objects.filter(instance_name__startswith="bot-many-").count() >= 100


def test_the_changelist_stays_within_10_queries_at_1000_instances(
        client, staff, django_assert_max_num_queries):
    _make("cl", 1000)
    with django_assert_max_num_queries(10):
        page = client.get(CHANGELIST)
    assert page.status_code == 200
    assert "1000 instances" in page.content.decode()


def test_the_changelist_checkbox_is_djangos_own_markup():
    """The changelist builds its row checkbox directly (Django's widget rendering was a fifth of
    the page's time); actions and the select-all script depend on the exact same markup."""
    from django.contrib import admin as django_admin

    model_admin = django_admin.site._registry[Instance]
    inst = Instance.objects.create(display_name="Box <&> \"quoted\"")
    ours = model_admin.action_checkbox(inst)
    assert ours == django_admin.ModelAdmin.action_checkbox(model_admin, inst)
    assert f'value="{inst.pk}"' in ours
