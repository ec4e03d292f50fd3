import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


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
            # Printed once, on the first start only: there is no other copy of it.
            self.stdout.write(f"Created admin user {username!r} with password: {password}")
