"""Manifests checked against Kubernetes' official schemas (kubernetes-validate, --strict).

The emulator accepts almost anything; these schemas are what a real API server's validation
starts from: an unknown field, a wrong type or a missing required field fails here. Checked for
the oldest version we promise (1.28), one in between and the newest the package ships, for the
manifests the backend builds (typical and edge-case specs), for what `manage.py show_workload`
prints, and for every manifest under deploy/.
"""

import dataclasses
import io
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError

from orchestrators import kubernetes as k8s
from orchestrators.base import DesktopAccess, InstanceSpec, Resources, Storage

ROOT = Path(__file__).resolve().parents[2]
VERSIONS = sorted({"1.28.0", "1.31.0", kubernetes_validate.latest_version()})
SECRET = "sk-ant-show-workload-secret-value"


def assert_valid(obj: dict, version: str) -> None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']} {obj['metadata'].get('name')} invalid for {version} at "
                    f"{where}: {exc.message}")


TYPICAL = InstanceSpec(name="bot-mybot", image="glukw/openclaw-vnc-chrome:latest",
                       port_chrome=30100, port_terminal=30101,
                       env={"ANTHROPIC_API_KEY": "sk-ant-x", "OPENAI_API_KEY": "sk-y"},
                       config={"agent": {"model": "claude"}})
EDGE_CASES = {
    "typical": (TYPICAL, k8s.ClusterOptions(), DesktopAccess.PORTS),
    # The longest name (the Service <name>-vnc is 63), no keys, no config, unprivileged,
    # fractional quantities, every cluster option, a ClusterIP Service.
    "edge": (
        dataclasses.replace(
            TYPICAL, name="b" + "x" * 58, env={}, config={}, privileged=False,
            resources=Resources(cpu_request="0.1", cpu_limit="1500m", memory_request="64Mi",
                                memory_limit="1.5Gi"),
            storage=Storage(clawdbot="1G", homebrew="100Gi", clawd="512Mi", chrome="1Ti"),
            port_chrome=32766, port_terminal=32767),
        k8s.ClusterOptions(storage_class="fast-ssd", image_pull_secrets=("regcred",),
                           node_selector={"kubernetes.io/arch": "amd64"},
                           tolerations=({"key": "agents", "operator": "Exists",
                                         "effect": "NoSchedule"},
                                        {"key": "node.kubernetes.io/unreachable",
                                         "operator": "Exists", "effect": "NoExecute",
                                         "tolerationSeconds": 300}),
                           seed_volumes=True),
        DesktopAccess.PROXY),
    "no seeding": (TYPICAL, k8s.ClusterOptions(seed_volumes=False), DesktopAccess.BOTH),
}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_built_manifests_pass_the_official_schemas(case, version):
    spec, options, access = EDGE_CASES[case]
    objects = k8s.build_all(spec, namespace="claworc", options=options, desktop_access=access)
    assert [o["kind"] for o in objects] == ["PersistentVolumeClaim"] * 4 + [
        "Secret", "ConfigMap", "Service", "Deployment"]
    for obj in objects:
        assert_valid(obj, version)


def test_the_validator_catches_a_broken_manifest():
    """The check above can fail: an unknown field and a wrong type are refused."""
    deployment = k8s.build_deployment(TYPICAL, namespace="claworc")
    deployment["spec"]["template"]["spec"]["automountServiceAcountToken"] = False
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)
    service = k8s.build_service(TYPICAL, namespace="claworc")
    service["spec"]["ports"][0]["nodePort"] = "30100"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, VERSIONS[-1], strict=True)


# --- manage.py show_workload -------------------------------------------------------------------

@pytest.fixture
def instance(db):
    from instances import key_services
    from instances.models import Instance

    key_services.api_keys_set_global(name="ANTHROPIC_API_KEY", value=SECRET)
    return Instance.objects.create(display_name="Show Me")


def show(*args) -> str:
    out = io.StringIO()
    call_command("show_workload", *args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("version", VERSIONS)
def test_show_workload_kubernetes_prints_every_object_valid(instance, version, settings):
    settings.CLAWORC_K8S_STORAGE_CLASS = "standard"
    settings.CLAWORC_K8S_TOLERATIONS = [{"key": "agents", "operator": "Exists"}]
    text = show(instance.name, "--backend", "kubernetes")
    documents = list(yaml.safe_load_all(text))
    assert [(d["kind"], d["metadata"]["name"]) for d in documents] == [
        ("PersistentVolumeClaim", "bot-show-me-clawdbot"),
        ("PersistentVolumeClaim", "bot-show-me-homebrew"),
        ("PersistentVolumeClaim", "bot-show-me-clawd"),
        ("PersistentVolumeClaim", "bot-show-me-chrome"),
        ("Secret", "bot-show-me-keys"),
        ("ConfigMap", "bot-show-me-config"),
        ("Service", "bot-show-me-vnc"),
        ("Deployment", "bot-show-me"),
    ]
    for document in documents:
        assert_valid(document, version)
    assert documents[0]["spec"]["storageClassName"] == "standard"


def test_show_workload_hides_keys_and_writes_nothing(instance, django_assert_max_num_queries):
    import base64

    from instances.models import Instance, PortAllocation

    before = Instance.objects.values().get(pk=instance.pk)
    with django_assert_max_num_queries(6):
        text = show(instance.name, "--backend", "kubernetes")
    encoded = base64.b64encode(SECRET.encode()).decode()
    assert SECRET not in text and encoded not in text
    secret = [d for d in yaml.safe_load_all(text) if d["kind"] == "Secret"][0]
    assert base64.b64decode(secret["data"]["ANTHROPIC_API_KEY"]).decode() == "<redacted>"
    # No pair was allocated: the first pair of the range, marked as a placeholder.
    assert "# PLACEHOLDER ports 30100/30101: no pair is allocated yet" in text
    assert PortAllocation.objects.count() == 0
    assert Instance.objects.values().get(pk=instance.pk) == before
    docker = show(instance.name, "--backend", "docker")
    assert SECRET not in docker and "<redacted>" in docker


def test_show_workload_uses_the_allocated_pair(instance):
    from instances.models import PortAllocation

    PortAllocation.objects.create(instance=instance, port_chrome=30150, port_terminal=30151)
    text = show(instance.name, "--backend", "kubernetes")
    assert "PLACEHOLDER" not in text
    service = [d for d in yaml.safe_load_all(text) if d["kind"] == "Service"][0]
    assert [p["nodePort"] for p in service["spec"]["ports"]] == [30150, 30151]


def test_show_workload_docker_prints_the_create_arguments(instance, settings):
    document = yaml.safe_load(show(instance.name, "--backend", "docker"))
    container = document["container"]
    assert container["name"] == "bot-show-me"
    assert container["environment"] == {"ANTHROPIC_API_KEY": "<redacted>"}
    assert document["volumes"] == [f"claworc-bot-show-me-{s}"
                                   for s in ("clawdbot", "homebrew", "clawd", "chrome")]
    assert document["config_path"] == (
        f"{settings.CLAWORC_DOCKER_CONFIG_DIR}/bot-show-me/clawdbot.json")


def test_show_workload_of_an_unknown_instance(db):
    with pytest.raises(CommandError, match="No instance named 'bot-nope'"):
        show("bot-nope")


# --- deploy/ -----------------------------------------------------------------------------------

#: The one optional cluster-wide grant: reading the kubelets' stats, for PVC use.
VOLUME_USAGE = "deploy/optional/volume-usage.yaml"

def deploy_documents() -> list[tuple[str, dict]]:
    found = []
    for path in sorted((ROOT / "deploy").rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((str(path.relative_to(ROOT)), document))
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_deploy_manifest_passes_the_official_schemas(version):
    documents = deploy_documents()
    kinds = {d["kind"] for _, d in documents}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service",
            "PersistentVolumeClaim", "NetworkPolicy", "Secret", "ConfigMap"} <= kinds
    for _, document in documents:
        assert_valid(document, version)


def test_the_role_is_least_privilege():
    """Namespaced, no wildcards, and every right it grants is one the backend uses."""
    documents = [d for path, d in deploy_documents() if path != VOLUME_USAGE]
    assert not {"ClusterRole", "ClusterRoleBinding"} & {d["kind"] for d in documents}
    [role] = [d for d in documents if d["kind"] == "Role"]
    granted = {(group, resource, verb)
               for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    assert not any("*" in part for grant in granted for part in grant)
    assert granted == {
        *(("apps", "deployments", v) for v in ("get", "list", "create", "patch", "delete")),
        *(("", "persistentvolumeclaims", v) for v in ("get", "list", "create", "patch",
                                                       "delete")),
        *(("", r, v) for r in ("secrets", "configmaps", "services")
          for v in ("get", "create", "patch", "delete")),
        ("", "pods", "list"), ("", "pods/log", "get"), ("", "events", "list"),
        ("", "namespaces", "get"), ("metrics.k8s.io", "pods", "list"),
        # The capacity budget: the namespace's quotas and per-container limits.
        ("", "resourcequotas", "list"), ("", "limitranges", "list"),
    }
    [namespace_rule] = [r for r in role["rules"] if r["resources"] == ["namespaces"]]
    assert namespace_rule["resourceNames"] == [role["metadata"]["namespace"]]
    agents = [d for d in documents if d["kind"] == "Namespace"][0]
    assert agents["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_the_only_cluster_wide_right_is_the_optional_kubelet_stats_read():
    """deploy/optional/volume-usage.yaml grants get on nodes/proxy (what the backend reads PVC
    use with) to the dashboard's account, nothing more, and is not applied by default."""
    documents = [d for path, d in deploy_documents() if path == VOLUME_USAGE]
    [role] = [d for d in documents if d["kind"] == "ClusterRole"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes/proxy"],
                              "verbs": ["get"]}]
    [binding] = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "claworc-dashboard",
                                    "namespace": "claworc"}]
    kustomization = yaml.safe_load((ROOT / "deploy" / "kustomization.yaml").read_text())
    assert "optional/volume-usage.yaml" not in kustomization["resources"]
