"""The rows of the status list and the admin changelist are built without the template engine
per row (instances/markup.py), and every value in them is escaped."""

import pytest
from django.contrib.auth.models import User
from django.test.signals import template_rendered
from django.urls import NoReverseMatch, reverse, set_script_prefix
from django.utils import timezone

from instances import markup
from instances.models import Instance, InstanceUsage, PortAllocation

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("x")</script> & \'q\''
ESCAPED = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#x27;q&#x27;"


@pytest.fixture
def root(client):
    user = User.objects.create_superuser("root-markup", password="pw-markup-long-enough")
    client.force_login(user)
    return user


def _fleet(prefix, n, first_port):
    Instance.objects.bulk_create(
        Instance(name=f"bot-{prefix}-{i:03d}", display_name=f"{prefix} {i}",
                 status="running" if i % 2 else "stopped") for i in range(n))
    PortAllocation.objects.bulk_create(
        PortAllocation(instance=o, port_chrome=first_port + 2 * i,
                       port_terminal=first_port + 2 * i + 1)
        for i, o in enumerate(Instance.objects.filter(name__startswith=f"bot-{prefix}-")))


def _templates_rendered(client, url):
    names = []

    def seen(sender, template, context, **kwargs):
        names.append(template.name)

    template_rendered.connect(seen)
    try:
        assert client.get(url).status_code == 200
    finally:
        template_rendered.disconnect(seen)
    return names


@pytest.mark.parametrize("url", ["/", reverse("admin:instances_instance_changelist")])
def test_a_page_renders_the_same_templates_for_5_rows_as_for_50(client, root, url):
    """Each row's status, buttons and desktop links used to be templates of their own: a page of
    50 rows rendered 150 more of them than a page of 5."""
    _fleet("few", 5, 40000)
    few = _templates_rendered(client, url)
    _fleet("many", 45, 41000)
    many = _templates_rendered(client, url)
    assert sorted(many) == sorted(few), set(many) ^ set(few) or len(many) - len(few)


def test_what_every_row_shares_is_worked_out_once_a_page(client, root, monkeypatch):
    """The user's right to control, the page's own URL and the CSRF token are the same for every
    row; each row used to work them out again."""
    from instances.templatetags import claworc_controls

    calls = []
    real = claworc_controls.can_control
    monkeypatch.setattr(claworc_controls, "can_control", lambda u: calls.append(u) or real(u))
    _fleet("once", 20, 42000)
    page = client.get("/?q=once").content.decode()
    assert page.count('name="next" value="/?q=once"') == 20
    assert page.count('name="csrfmiddlewaretoken"') >= 20
    assert len(calls) == 1


def test_every_value_in_a_row_is_escaped(client, root):
    inst = Instance.objects.create(
        name="bot-hostile", display_name=HOSTILE, status="running", status_message=HOSTILE,
        schedule_days="mon", schedule_start="08:00", schedule_end="18:00",
        schedule_timezone="UTC")
    Instance.objects.filter(pk=inst.pk).update(auto_note=HOSTILE, auto_version=inst.version)
    inst.refresh_from_db()
    PortAllocation.objects.create(instance=inst, port_chrome=40000, port_terminal=40001)
    InstanceUsage.objects.create(instance=inst, message=HOSTILE, sampled_at=timezone.now())
    links = [{"url": f"http://h/?a=1&b={HOSTILE}", "note": HOSTILE, "label": HOSTILE}]
    inst = Instance.objects.select_related("ports", "usage").get(pk=inst.pk)

    row = markup.list_row(inst, links=links, now=timezone.now(), buttons=markup.controls(
        inst, allowed=True, next_url=f"/?q={HOSTILE}", csrf_token=HOSTILE))
    admin_cells = (markup.admin_name(inst) + markup.admin_status(inst, HOSTILE)
                   + markup.admin_desired(inst) + markup.admin_usage(inst)
                   + markup.vnc(inst, links, buttons=True))
    for html in (row, admin_cells):
        assert "<script>" not in html
        assert ESCAPED in html
    # display name, message, auto reason, usage, the link (3), next, the csrf token
    assert row.count(ESCAPED) == 9
    assert 'href="http://h/?a=1&amp;b=&lt;script&gt;' in row
    assert "runs Mon 08:00-18:00 UTC" in row
    # And on the pages themselves.
    for url in ("/", reverse("admin:instances_instance_changelist")):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page and ESCAPED in page


def test_buttons_follow_the_state_and_the_users_right():
    inst = Instance(name="bot-b", status="running", desired_state="running")
    html = markup.controls(inst, allowed=True, next_url="/", csrf_token="tok", compact=True)
    assert 'action="/instances/bot-b/action/"' in html
    assert '<input type="hidden" name="csrfmiddlewaretoken" value="tok">' in html
    shown = [a for a in ("start", "stop", "restart", "recreate")
             if f'data-live-action="{a}">' in html]
    assert shown == ["stop", "restart", "recreate"]
    assert " title=" not in html
    assert 'title="Stop the workload; volumes are kept"' in markup.controls(
        inst, allowed=True, next_url="/", csrf_token="tok")
    assert markup.controls(inst, allowed=False, next_url="/", csrf_token="tok") == ""
    assert "csrfmiddlewaretoken" not in markup.controls(inst, allowed=True, next_url="/",
                                                        csrf_token="")


def test_row_urls_are_what_reverse_gives_under_a_script_prefix():
    try:
        for prefix in ("/", "/claworc/"):
            set_script_prefix(prefix)
            for view in ("instances:detail", "instances:action"):
                assert markup._url(view, "bot-x-1") == reverse(view, args=["bot-x-1"])
            assert markup._url("instances:live") == reverse("instances:live")
    finally:
        set_script_prefix("/")
    with pytest.raises(NoReverseMatch):  # not a slug: the URLconf's answer, as reverse() gives
        markup._url("instances:detail", "not a slug")


@pytest.mark.parametrize("query", [
    "", "?status__exact=running", "?q=bot&o=-2.3", "?_popup=1", "?_popup=1&_to_field=id",
    "?p=2", "?desired_state__exact=running&status__exact=error",
])
def test_changelist_rows_are_djangos_own_markup(client, root, monkeypatch, query):
    """The changelist's rows are built by markup.admin_row(); Django's items_for_result(), which
    it replaces, must give the same page: links with the preserved filters, popups, hostile
    values, empty ones."""
    _fleet("cl", 60, 40000)
    odd = Instance.objects.create(name="bot-odd", display_name=HOSTILE, status="error",
                                  status_message=HOSTILE)
    Instance.objects.filter(pk=odd.pk).update(image=" ")  # blank: what Django shows as empty
    url = reverse("admin:instances_instance_changelist") + query

    def results():
        page = client.get(url).content.decode()
        start = page.index('<div class="results">')
        return page[start:page.index("</table>", start)]

    ours = results()
    monkeypatch.setattr(markup, "admin_rows_supported", lambda cl: False)
    djangos = results()
    assert ours.count("<tr>") >= 2  # the header and at least one row
    assert ours == djangos
