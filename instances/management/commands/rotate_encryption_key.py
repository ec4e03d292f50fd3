from django.core.management.base import BaseCommand, CommandError

from instances import keys
from instances.key_services import api_keys_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored API key with the newest key in CLAWORC_ENCRYPTION_KEY "
        "(comma-separated, newest first; the older ones still decrypt). Rotation: put a new key "
        "first, restart, run this, then drop the old key."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--forget-unreadable", action="store_true",
            help="Delete values that no configured key can decrypt (their encryption key is "
            "lost); re-enter them in the admin afterwards.",
        )

    def handle(self, *args, forget_unreadable=False, **options):
        keys.check_encryption_key()
        report = api_keys_reencrypt(forget_unreadable=forget_unreadable,
                                    actor="rotate_encryption_key")
        self.stdout.write(f"Re-encrypted {report.reencrypted} stored API key values with the "
                          f"newest {keys.ENV_VAR} key.")
        for where in report.forgotten:
            self.stdout.write(f"Removed the unreadable {where}; re-enter it in the admin.")
        if report.unreadable:
            raise CommandError(
                f"{len(report.unreadable)} stored values cannot be decrypted with any "
                f"{keys.ENV_VAR} key ({', '.join(report.unreadable)}). Add the key they were "
                "encrypted with (after the new one), or run with --forget-unreadable and "
                "re-enter them."
            )
