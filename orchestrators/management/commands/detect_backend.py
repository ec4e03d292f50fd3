import json

from django.core.management.base import BaseCommand, CommandError

from orchestrators import registry

EXIT_UNUSABLE = 1


class Command(BaseCommand):
    help = (
        "Choose the orchestrator backend and say why. A backend stored in the "
        f"'{registry.SETTING_KEY}' setting (docker or kubernetes) is used as is and only that "
        "backend is checked; otherwise Kubernetes (in-cluster config, then kubeconfig) and then "
        "Docker (CLAWORC_DOCKER_HOST or the default socket) are tried, and the first that "
        "answers is stored. Prints one line per backend tried with the reason it is or is not "
        "usable. Exits with status 1 when no backend is usable."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--redetect", action="store_true",
            help="Detect again even when a backend is already stored, and store the result.",
        )
        parser.add_argument(
            "--set", dest="choice", choices=[registry.DOCKER, registry.KUBERNETES, registry.AUTO],
            help="Store this choice first. 'docker' or 'kubernetes' forces that backend (no "
            "detection, then or later); 'auto' forgets the stored choice and detects again.",
        )
        parser.add_argument(
            "--json", dest="as_json", action="store_true",
            help="Print the result as one JSON object (orchestrator_backend, usable, source, "
            "persisted, tried: [{backend, usable, reason}]).",
        )
        parser.add_argument(
            "--timeout", type=float, default=registry.PROBE_TIMEOUT,
            help="Seconds each backend may take to answer (default: %(default)s).",
        )

    def handle(self, *args, choice=None, redetect=False, as_json=False, timeout=None, **options):
        if choice:
            registry.store_choice(choice)
        found = registry.detect(
            persist=True, redetect=redetect or choice == registry.AUTO, timeout=timeout
        )
        if as_json:
            self.stdout.write(json.dumps(found.as_dict(), indent=2))
        else:
            self._report(found, choice)
        if not found.usable:
            raise CommandError(
                "no orchestrator backend is usable"
                if found.backend == registry.NONE
                else f"the stored backend {found.backend} is not usable",
                returncode=EXIT_UNUSABLE,
            )

    def _report(self, found, choice):
        for line in found.lines():
            self.stdout.write(line)
        if found.source == "setting":
            how = (
                "set now with --set" if choice
                else f"stored in the '{registry.SETTING_KEY}' setting; detection skipped, "
                "--redetect runs it"
            )
        else:
            how = "detected, stored" if found.persisted else "detected"
        style = self.style.SUCCESS if found.usable else self.style.ERROR
        self.stdout.write(style(f"orchestrator_backend: {found.backend} ({how})"))
