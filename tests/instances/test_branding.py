"""The admin says Claworc, not "Django administration"."""

import pytest
from django.contrib.auth import get_user_model

pytestmark = pytest.mark.django_db


def test_the_admin_is_branded_claworc(client):
    login = client.get("/admin/login/")
    assert b"Django administration" not in login.content
    assert b"<title>Log in | Claworc</title>" in login.content
    user = get_user_model().objects.create_superuser("boss", password="pw-for-tests-only")
    client.force_login(user)
    index = client.get("/admin/").content.decode()
    assert '<a href="/admin/">Claworc</a>' in index
    assert "Instances, keys and settings | Claworc" in index
