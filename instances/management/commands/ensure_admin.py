import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

PASSWORD_FILE = "admin-password"


class Command(BaseCommand):
    help = (
        "Create a superuser when none exists. The password comes from CLAWORC_ADMIN_PASSWORD, "
        "or is generated and printed once. The username is CLAWORC_ADMIN_USER (default admin)."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            return
        username = os.environ.get("CLAWORC_ADMIN_USER", "admin")
        password = os.environ.get("CLAWORC_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        if os.environ.get("CLAWORC_ADMIN_PASSWORD"):
            self.stdout.write(
                f"Created admin user {username!r} (password from CLAWORC_ADMIN_PASSWORD)."
            )
        else:
            # Printed on the first start, and kept beside the other generated secrets (same
            # permissions) so that it is not lost when the terminal scrolls.
            path = Path(settings.DATA_DIR) / PASSWORD_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"{username} {password}\n")
            self.stdout.write(f"Created admin user {username!r} with password: {password}")
            self.stdout.write(f"(kept in {path}; delete that file once noted)")
