import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_creates_an_admin_once_with_the_password_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("CLAWORC_ADMIN_PASSWORD", "correct-horse-battery")
    call_command("ensure_admin")
    out = capsys.readouterr().out
    assert "Created admin user 'admin'" in out and "correct-horse-battery" not in out
    assert authenticate(username="admin", password="correct-horse-battery").is_superuser
    call_command("ensure_admin")  # a second start changes nothing, prints nothing
    assert capsys.readouterr().out == ""
    assert get_user_model().objects.count() == 1


def test_generated_password_is_printed_once_and_works(monkeypatch, capsys):
    monkeypatch.delenv("CLAWORC_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("CLAWORC_ADMIN_USER", "boss")
    call_command("ensure_admin")
    out = capsys.readouterr().out.strip().splitlines()
    password = out[0].rsplit(": ", 1)[1]
    assert authenticate(username="boss", password=password) is not None
    # Kept where `make run` says it is, readable by the owner only.
    from pathlib import Path

    from django.conf import settings

    kept = Path(settings.DATA_DIR) / "admin-password"
    assert f"kept in {kept}" in out[1]
    assert kept.read_text() == f"boss {password}\n"
    assert kept.stat().st_mode & 0o777 == 0o600
