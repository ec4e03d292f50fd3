"""Every field of the Kubernetes manifests, built by pure functions (issue 6, ARCHITECTURE.md)."""

import base64
import datetime
import json

import pytest

from orchestrators import kubernetes as k8s
from orchestrators.base import InstanceSpec, Resources, Storage

LABELS = {"app": "bot-mybot", "managed-by": "claworc", "claworc.instance": "bot-mybot"}


@pytest.fixture
def spec():
    return InstanceSpec(
        name="bot-mybot",
        image="glukw/openclaw-vnc-chrome:latest",
        port_chrome=30100,
        port_terminal=30101,
        env={"ANTHROPIC_API_KEY": "sk-ant-secret", "OPENAI_API_KEY": "sk-openai"},
        config={"agent": {"model": "claude"}, "theme": "dark"},
        resources=Resources(cpu_request="250m", cpu_limit="3", memory_request="2Gi",
                            memory_limit="6Gi"),
        storage=Storage(clawdbot="1Gi", homebrew="20Gi", clawd="3Gi", chrome="4Gi"),
        privileged=True,
    )


def test_names():
    assert k8s.pvc_name("bot-mybot", "chrome") == "bot-mybot-chrome"
    assert k8s.secret_name("bot-mybot") == "bot-mybot-keys"
    assert k8s.config_map_name("bot-mybot") == "bot-mybot-config"
    assert k8s.service_name("bot-mybot") == "bot-mybot-vnc"
    assert k8s.labels("bot-mybot") == LABELS


def test_pvcs(spec):
    pvcs = k8s.build_pvcs(spec, namespace="claworc")
    assert [p["metadata"]["name"] for p in pvcs] == [
        "bot-mybot-clawdbot", "bot-mybot-homebrew", "bot-mybot-clawd", "bot-mybot-chrome"]
    sizes = [p["spec"]["resources"]["requests"]["storage"] for p in pvcs]
    assert sizes == ["1Gi", "20Gi", "3Gi", "4Gi"]
    for pvc in pvcs:
        assert pvc["apiVersion"] == "v1" and pvc["kind"] == "PersistentVolumeClaim"
        assert pvc["metadata"]["namespace"] == "claworc"
        assert pvc["metadata"]["labels"] == LABELS
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
        assert set(pvc["spec"]) == {"accessModes", "resources"}  # default storage class


def test_secret_holds_keys_base64(spec):
    secret = k8s.build_secret(spec, namespace="team")
    assert secret["apiVersion"] == "v1" and secret["kind"] == "Secret"
    assert secret["metadata"] == {"name": "bot-mybot-keys", "namespace": "team", "labels": LABELS}
    assert secret["type"] == "Opaque"
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"ANTHROPIC_API_KEY": "sk-ant-secret", "OPENAI_API_KEY": "sk-openai"}
    assert "stringData" not in secret


def test_config_map(spec):
    cm = k8s.build_config_map(spec, namespace="claworc")
    assert cm["apiVersion"] == "v1" and cm["kind"] == "ConfigMap"
    assert cm["metadata"] == {"name": "bot-mybot-config", "namespace": "claworc",
                              "labels": LABELS}
    assert list(cm["data"]) == ["clawdbot.json"]
    assert json.loads(cm["data"]["clawdbot.json"]) == {"agent": {"model": "claude"},
                                                       "theme": "dark"}


def test_deployment_metadata_strategy_and_replicas(spec):
    dep = k8s.build_deployment(spec, namespace="claworc")
    assert dep["apiVersion"] == "apps/v1" and dep["kind"] == "Deployment"
    assert dep["metadata"] == {"name": "bot-mybot", "namespace": "claworc", "labels": LABELS}
    assert dep["spec"]["replicas"] == 1
    assert k8s.build_deployment(spec, namespace="claworc", replicas=0)["spec"]["replicas"] == 0
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "bot-mybot"}}
    template = dep["spec"]["template"]
    assert template["metadata"] == {"labels": LABELS, "annotations": {
        "claworc/config-checksum": k8s.config_checksum(spec)}}
    # The selector must select the template's pods.
    assert dep["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_deployment_container(spec):
    pod = k8s.build_deployment(spec, namespace="claworc")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["name"] == "agent"
    assert container["image"] == "glukw/openclaw-vnc-chrome:latest"
    assert container["envFrom"] == [{"secretRef": {"name": "bot-mybot-keys"}}]
    assert "env" not in container  # keys only through the Secret
    assert container["ports"] == [
        {"name": "novnc-chrome", "containerPort": 6081, "protocol": "TCP"},
        {"name": "novnc-term", "containerPort": 6082, "protocol": "TCP"},
    ]
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "2Gi"},
        "limits": {"cpu": "3", "memory": "6Gi"},
    }
    assert container["securityContext"] == {"privileged": True}
    assert container["livenessProbe"]["tcpSocket"] == {"port": 6081}
    assert container["readinessProbe"]["httpGet"] == {"path": "/", "port": 6081}
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["periodSeconds"] > 0 and probe["initialDelaySeconds"] >= 0


def test_deployment_unprivileged_when_the_spec_says_so(spec):
    from dataclasses import replace

    pod = k8s.build_deployment(replace(spec, privileged=False), namespace="c")
    container = pod["spec"]["template"]["spec"]["containers"][0]
    assert container["securityContext"] == {"privileged": False}


def test_deployment_volumes_and_mounts(spec):
    pod = k8s.build_deployment(spec, namespace="claworc")["spec"]["template"]["spec"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert mounts == [
        {"name": "clawdbot", "mountPath": "/root/.clawdbot"},
        {"name": "homebrew", "mountPath": "/home/linuxbrew/.linuxbrew"},
        {"name": "clawd", "mountPath": "/root/clawd"},
        {"name": "chrome", "mountPath": "/root/.config/google-chrome"},
        {"name": "config", "mountPath": "/etc/clawdbot/clawdbot.json",
         "subPath": "clawdbot.json", "readOnly": True},
    ]
    assert pod["volumes"] == [
        {"name": "clawdbot", "persistentVolumeClaim": {"claimName": "bot-mybot-clawdbot"}},
        {"name": "homebrew", "persistentVolumeClaim": {"claimName": "bot-mybot-homebrew"}},
        {"name": "clawd", "persistentVolumeClaim": {"claimName": "bot-mybot-clawd"}},
        {"name": "chrome", "persistentVolumeClaim": {"claimName": "bot-mybot-chrome"}},
        {"name": "config", "configMap": {"name": "bot-mybot-config"}},
    ]


def test_service(spec):
    svc = k8s.build_service(spec, namespace="claworc")
    assert svc["apiVersion"] == "v1" and svc["kind"] == "Service"
    assert svc["metadata"] == {"name": "bot-mybot-vnc", "namespace": "claworc", "labels": LABELS}
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"] == {"app": "bot-mybot"}
    assert svc["spec"]["ports"] == [
        {"name": "chrome", "protocol": "TCP", "port": 6081, "targetPort": 6081,
         "nodePort": 30100},
        {"name": "terminal", "protocol": "TCP", "port": 6082, "targetPort": 6082,
         "nodePort": 30101},
    ]


def test_restart_patch_sets_annotation_and_one_replica():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    assert k8s.restart_patch(now) == {"spec": {"replicas": 1, "template": {"metadata": {
        "annotations": {"claworc/restartedAt": "2026-01-02T03:04:05+00:00"}}}}}


def test_manifests_are_accepted_by_the_client_models(spec):
    """The official client validates request bodies: every manifest must deserialize."""
    from kubernetes import client

    api = client.ApiClient()
    for manifest, model in [
        (k8s.build_deployment(spec, namespace="c"), "V1Deployment"),
        (k8s.build_service(spec, namespace="c"), "V1Service"),
        (k8s.build_secret(spec, namespace="c"), "V1Secret"),
        (k8s.build_config_map(spec, namespace="c"), "V1ConfigMap"),
        *((pvc, "V1PersistentVolumeClaim") for pvc in k8s.build_pvcs(spec, namespace="c")),
    ]:
        obj = api._ApiClient__deserialize(manifest, model)
        assert api.sanitize_for_serialization(obj) == manifest


def test_repr_of_spec_and_manifest_functions_do_not_leak_keys(spec):
    assert "sk-ant-secret" not in repr(spec)
    assert "sk-ant-secret" not in json.dumps(k8s.build_deployment(spec, namespace="c"))


def test_covers_ignores_server_defaults_and_equal_quantities():
    desired = {"a": 1, "resources": {"limits": {"cpu": "2000m", "memory": "1Gi"}},
               "items": [{"name": "x"}]}
    actual = {"a": 1, "extra": True, "resources": {"limits": {"cpu": "2", "memory": "1Gi"}},
              "items": [{"name": "x", "default": 0}]}
    assert k8s.covers(actual, desired)
    assert not k8s.covers(actual | {"a": 2}, desired)
    assert not k8s.covers(actual | {"items": [{"name": "x"}, {"name": "y"}]}, desired)
    assert not k8s.covers({**actual, "resources": {"limits": {"cpu": "3", "memory": "1Gi"}}},
                          desired)
    # Outside resources, strings are compared as they are.
    assert not k8s.covers({"image": "2"}, {"image": "2000m"})


def test_data_patch_changes_and_removes_keys():
    assert k8s.data_patch({"A": "1"}, {"A": "1"}) is None
    assert k8s.data_patch({"A": "1", "B": "2"}, {"A": "9"}) == {"A": "9", "B": None}
    assert k8s.data_patch({}, {"A": "1"}) == {"A": "1"}


def test_agent_pods_get_no_service_account_token(spec):
    pod = k8s.build_deployment(spec, namespace="claworc")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_checksum_follows_the_secret_and_config_data_only(spec):
    from dataclasses import replace

    same = k8s.config_checksum(spec)
    assert k8s.config_checksum(replace(spec, image="other:2")) == same
    assert k8s.config_checksum(replace(spec, env={"ANTHROPIC_API_KEY": "sk-2"})) != same
    assert k8s.config_checksum(replace(spec, config={"theme": "light"})) != same
    assert "sk-ant-secret" not in same


def test_seed_init_container_mounts_each_volume_beside_the_image_directory(spec):
    pod = k8s.build_deployment(spec, namespace="claworc")["spec"]["template"]["spec"]
    [seed] = pod["initContainers"]
    assert seed["name"] == "seed-volumes" and seed["image"] == spec.image
    assert seed["volumeMounts"] == [
        {"name": v, "mountPath": f"/claworc-seed/{v}"}
        for v in ("clawdbot", "homebrew", "clawd", "chrome")]
    script = seed["command"][2]
    assert seed["command"][:2] == ["/bin/sh", "-c"]
    assert "seed '/home/linuxbrew/.linuxbrew' '/claworc-seed/homebrew'" in script
    assert seed["resources"] == pod["containers"][0]["resources"]
    assert "securityContext" not in seed  # copying needs no privileges
    off = k8s.ClusterOptions(seed_volumes=False)
    pod = k8s.build_deployment(spec, namespace="claworc", options=off)["spec"]["template"]["spec"]
    assert "initContainers" not in pod


def test_cluster_options(spec):
    options = k8s.ClusterOptions(
        storage_class="fast-ssd", image_pull_secrets=("regcred", "other"),
        node_selector={"claworc.io/agents": "true"},
        tolerations=({"key": "agents", "operator": "Equal", "value": "yes",
                      "effect": "NoSchedule"},))
    for pvc in k8s.build_pvcs(spec, namespace="claworc", options=options):
        assert pvc["spec"]["storageClassName"] == "fast-ssd"
    pod = k8s.build_deployment(spec, namespace="claworc", options=options)["spec"]["template"][
        "spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "other"}]
    assert pod["nodeSelector"] == {"claworc.io/agents": "true"}
    assert pod["tolerations"] == [{"key": "agents", "operator": "Equal", "value": "yes",
                                   "effect": "NoSchedule"}]
    plain = k8s.build_deployment(spec, namespace="claworc")["spec"]["template"]["spec"]
    assert not {"imagePullSecrets", "nodeSelector", "tolerations"} & set(plain)
