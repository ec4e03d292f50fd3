"""The status pages link to whichever way into the desktops is on, and say which."""

import pytest

from .conftest import grant_view, make_instance

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_with_desktops(client, desk_user):
    desk_user.is_staff = True
    desk_user.save()
    user = grant_view(desk_user)
    client.force_login(user)
    return user


def test_proxy_mode_links_through_the_dashboard_only(client, settings, staff_with_desktops,
                                                      django_assert_max_num_queries):
    settings.CLAWORC_DESKTOP_ACCESS = "proxy"
    for index in range(3):
        make_instance(f"bot-page{index}", port=30100 + 2 * index)
    with django_assert_max_num_queries(12):
        page = client.get("/").content.decode()
    assert 'href="/instances/bot-page2/desktop/chrome/"' in page
    assert 'href="/instances/bot-page2/desktop/terminal/"' in page
    assert ":30104/vnc.html" not in page
    assert "only through this dashboard" in page
    detail = client.get("/instances/bot-page1/").content.decode()
    assert 'href="/instances/bot-page1/desktop/terminal/"' in detail
    assert "nothing is published on the node" in detail


def test_both_mode_shows_both_ways_and_says_the_ports_need_no_login(client, settings,
                                                                     staff_with_desktops):
    settings.CLAWORC_DESKTOP_ACCESS = "both"
    make_instance("bot-page")
    detail = client.get("/instances/bot-page/").content.decode()
    assert 'href="/instances/bot-page/desktop/chrome/"' in detail
    assert 'href="http://127.0.0.1:30100/vnc.html?autoconnect=true"' in detail
    assert "port 30100, no login" in detail
    assert "also published on the node&#x27;s ports, without a login" in detail


def test_staff_without_the_permission_see_no_proxy_links(client, settings, plain_user):
    settings.CLAWORC_DESKTOP_ACCESS = "proxy"
    make_instance("bot-page")
    client.force_login(plain_user)
    detail = client.get("/instances/bot-page/").content.decode()
    assert "/desktop/chrome/" not in detail
    assert "You do not have permission to use desktops." in detail


def test_the_admin_links_through_the_dashboard_in_proxy_mode_and_says_so(client, settings,
                                                                         django_user_model):
    settings.CLAWORC_DESKTOP_ACCESS = "proxy"
    instance = make_instance("bot-adm", port=30110)
    client.force_login(django_user_model.objects.create_superuser(
        "root", password="pw-for-tests-only"))
    listing = client.get("/admin/instances/instance/").content.decode()
    assert 'href="/instances/bot-adm/desktop/chrome/"' in listing
    assert ":30110/vnc.html" not in listing
    change = client.get(f"/admin/instances/instance/{instance.pk}/change/").content.decode()
    assert 'href="/instances/bot-adm/desktop/terminal/"' in change
    assert "nothing is published on the node" in change
