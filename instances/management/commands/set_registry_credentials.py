"""Store (or remove) the credentials Claworc pulls images from a private registry with."""

import sys

from django.core.management.base import BaseCommand, CommandError

from instances.services import images as image_services


class Command(BaseCommand):
    help = ("Store credentials for pulls from a registry (encrypted with CLAWORC_ENCRYPTION_KEY). "
            "The password is read from standard input, never from the command line.")

    def add_arguments(self, parser):
        parser.add_argument("registry", help="registry host, e.g. ghcr.io or 10.0.0.5:5000")
        parser.add_argument("--username", help="the registry user")
        parser.add_argument("--remove", action="store_true", help="forget this registry")

    def handle(self, *args, registry, username=None, remove=False, **options):
        if remove:
            found = image_services.registry_auth_clear(registry=registry)
            self.stdout.write(f"Removed the credentials for {registry}." if found
                              else f"No credentials were stored for {registry}.")
            return
        if not username:
            raise CommandError("--username is required (or --remove).")
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CommandError("Give the password on standard input, e.g. "
                               "`printf %s \"$TOKEN\" | manage.py set_registry_credentials ...`.")
        try:
            image_services.registry_auth_set(registry=registry, username=username,
                                             password=password)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Stored the credentials of {username} for {registry}; pulls from it "
                          "use them from now on.")
