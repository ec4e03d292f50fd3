"""Two Claworc installations (sites) sharing one Kubernetes namespace, over HTTP against the
emulated API server: neither lists, adopts or deletes the other's objects, and objects made
before sites existed are adopted by their site's first converge."""

import dataclasses

import pytest
from kubernetes import client

from orchestrators.base import LABEL_SITE, FinalError, InstanceSpec, Status
from orchestrators.kubernetes import ClusterOptions, KubernetesOrchestrator, build_all
from tests import kube_support

kube_api = kube_support.kube_api

NS = "claworc"
#: Every object an instance gets, as (resource, name suffix).
OBJECTS = [
    *(("v1/persistentvolumeclaims", f"-{v}") for v in ("clawdbot", "homebrew", "clawd", "chrome")),
    ("v1/secrets", "-keys"), ("v1/configmaps", "-config"), ("v1/services", "-vnc"),
    ("apps/v1/deployments", ""),
]


@pytest.fixture
def site_orch(kube_api, settings, tmp_path, monkeypatch):
    """An orchestrator made from the settings, as workers make it, for a given CLAWORC_SITE_ID."""
    monkeypatch.setenv("KUBECONFIG", str(kube_api.write_kubeconfig(tmp_path / "kubeconfig")))
    settings.CLAWORC_K8S_NAMESPACE = NS

    def make(site_id):
        settings.CLAWORC_SITE_ID = site_id
        return KubernetesOrchestrator.from_settings()

    return make


def make_spec(name, chrome=30100, **changes):
    spec = InstanceSpec(name=name, image="agent:1", port_chrome=chrome, port_terminal=chrome + 1,
                        env={"ANTHROPIC_API_KEY": "sk-ant-site-secret"}, config={"m": 1})
    return dataclasses.replace(spec, **changes)


def stored_all(kube_api, name):
    return {(resource, name + suffix): kube_api.stored(resource, name + suffix)
            for resource, suffix in OBJECTS}


def writes(kube_api, since):
    return [(m, p) for m, p, _ in kube_api.requests()[since:] if m != "GET"]


def test_every_object_carries_the_site_but_no_selector_does():
    objects = build_all(make_spec("bot-a"), namespace=NS, options=ClusterOptions(site="site-a"))
    assert all(o["metadata"]["labels"][LABEL_SITE] == "site-a" for o in objects)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [service] = [o for o in objects if o["kind"] == "Service"]
    # Pods carry it (they are listed by it); a selector never does: a Deployment's cannot
    # change on a live object, and the name alone is unique in the namespace.
    assert deployment["spec"]["template"]["metadata"]["labels"][LABEL_SITE] == "site-a"
    assert deployment["spec"]["selector"] == {"matchLabels": {"app": "bot-a"}}
    assert service["spec"]["selector"] == {"app": "bot-a"}
    # No site: no label, as before sites existed.
    assert all(LABEL_SITE not in o["metadata"]["labels"]
               for o in build_all(make_spec("bot-a"), namespace=NS))


def test_two_sites_in_one_namespace_never_see_adopt_or_delete_each_others_objects(
        kube_api, site_orch):
    staging, production = site_orch("site-staging"), site_orch("site-production")
    spec = make_spec("bot-shared")
    staging.ensure(spec)
    kube_api.controller.settle("bot-shared")
    before = stored_all(kube_api, "bot-shared")
    for (resource, name), obj in before.items():
        assert obj["metadata"]["labels"][LABEL_SITE] == "site-staging", (resource, name)
    template = before[("apps/v1/deployments", "bot-shared")]["spec"]["template"]
    assert template["metadata"]["labels"][LABEL_SITE] == "site-staging"
    production.ensure(make_spec("bot-prod", chrome=30110))
    kube_api.controller.settle("bot-prod")

    # Listing: each site sees only its own, although the emulator ignores label selectors
    # (so each list below also returned the other site's objects).
    mark = len(kube_api.requests())
    assert staging.status_all()["bot-shared"].status is Status.RUNNING
    assert set(staging.status_all()) == {"bot-shared"}
    assert set(staging.volumes_all()) == {"bot-shared"}
    assert set(production.status_all()) == {"bot-prod"}
    assert set(production.volumes_all()) == {"bot-prod"}
    lists = [q.get("labelSelector", "") for m, p, q in kube_api.requests()[mark:] if m == "GET"]
    assert lists and all(s.startswith("managed-by=claworc,claworc.site=") or
                         s == "managed-by=claworc,!claworc.site" for s in lists), lists
    assert "managed-by=claworc,claworc.site=site-staging" in lists

    # Adopting: production creating an instance of the same name is refused, clearly, before
    # anything is made or changed.
    mark = len(kube_api.requests())
    other = make_spec("bot-shared", chrome=30120, env={"OTHER": "x"})
    message = ("PersistentVolumeClaim named bot-shared-clawdbot belongs to another Claworc "
               "installation in namespace claworc (site site-staging; this one is "
               "site-production); Claworc will not take it over. Give the instance another name.")
    with pytest.raises(FinalError) as refused:
        production.ensure(other)
    assert str(refused.value) == "A " + message
    with pytest.raises(FinalError, match="site site-staging; this one is site-production"):
        production.recreate(other)
    for operation in (production.start, production.stop, production.restart):
        with pytest.raises(FinalError, match="Deployment named bot-shared belongs to another"):
            operation("bot-shared")
    observed = production.status("bot-shared")
    assert observed.status is Status.ERROR and "another Claworc installation" in observed.message

    # Deleting: refused, before any object is deleted, volumes or not.
    for purge in (False, True):
        with pytest.raises(FinalError, match="belongs to another Claworc installation"):
            production.delete("bot-shared", purge_volumes=purge)
    assert writes(kube_api, mark) == []
    assert stored_all(kube_api, "bot-shared") == before
    assert staging.status("bot-shared").status is Status.RUNNING

    # Each site deletes its own, and only its own.
    staging.delete("bot-shared", purge_volumes=True)
    assert all(obj is None for obj in stored_all(kube_api, "bot-shared").values())
    assert all(obj is not None for obj in stored_all(kube_api, "bot-prod").values())
    # The name is free again: production may now make its own of that name.
    production.ensure(other)
    assert kube_api.stored("apps/v1/deployments", "bot-shared")["metadata"]["labels"][
        LABEL_SITE] == "site-production"


def test_objects_made_before_sites_existed_are_adopted_on_first_converge(kube_api, site_orch):
    legacy = site_orch("")  # a version without sites: no site label anywhere
    legacy.ensure(make_spec("bot-running"))
    legacy.ensure(make_spec("bot-stopped", chrome=30110))
    legacy.stop("bot-stopped")
    kube_api.controller.settle("bot-running")
    old = stored_all(kube_api, "bot-running")
    assert all(LABEL_SITE not in o["metadata"]["labels"] for o in old.values())

    staging = site_orch("site-staging")
    # A stopped one is reported as it is; one meant to run is left out of status_all, so the
    # reconciler converges it (its Pods carry no site label to observe it by).
    answer = staging.status_all()
    assert answer["bot-stopped"].status is Status.STOPPED
    assert "bot-running" not in answer
    # The volumes of live instances are labelled by their converge; an unlabelled orphan could
    # be another site's, so none is reported.
    assert staging.volumes_all() == {}

    observed = staging.ensure(make_spec("bot-running"))
    assert observed.exists
    new = stored_all(kube_api, "bot-running")
    for key, obj in new.items():
        assert obj["metadata"]["labels"][LABEL_SITE] == "site-staging", key
        assert obj["metadata"]["uid"] == old[key]["metadata"]["uid"], key  # adopted, not remade
    deployment = new[("apps/v1/deployments", "bot-running")]
    assert deployment["spec"]["selector"] == old[("apps/v1/deployments", "bot-running")][
        "spec"]["selector"]
    assert deployment["spec"]["template"]["metadata"]["labels"][LABEL_SITE] == "site-staging"
    kube_api.controller.settle("bot-running")  # its Pod is replaced once, with the label
    assert staging.status_all()["bot-running"].status is Status.RUNNING
    assert set(staging.volumes_all()) == {"bot-running"}

    # Adopted, it is staging's: another site can no longer take it over.
    with pytest.raises(FinalError, match="belongs to another Claworc installation"):
        site_orch("site-production").ensure(make_spec("bot-running"))

    # Converging twice writes nothing more.
    mark = len(kube_api.requests())
    staging.ensure(make_spec("bot-running"))
    assert writes(kube_api, mark) == []


def test_status_all_lists_by_site(kube_api, site_orch):
    staging = site_orch("site-staging")
    staging.ensure(make_spec("bot-a"))
    kube_api.controller.settle("bot-a")
    mark = len(kube_api.requests())
    staging.status_all()
    calls = [(p.rsplit("/", 1)[-1], q["labelSelector"]) for m, p, q in kube_api.requests()[mark:]]
    mine = "managed-by=claworc,claworc.site=site-staging"
    assert calls == [("deployments", mine), ("deployments", "managed-by=claworc,!claworc.site"),
                     ("pods", mine), ("services", mine), ("secrets", mine),
                     ("configmaps", mine)]


def test_usage_never_reports_another_sites_pod(kube_api, site_orch):
    staging, production = site_orch("site-staging"), site_orch("site-production")
    staging.ensure(make_spec("bot-shared"))
    [pod] = kube_api.controller.settle("bot-shared")
    api = client.CustomObjectsApi(kube_api.api_client())
    metrics = {"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
               "metadata": {"name": pod["metadata"]["name"], "namespace": NS,
                            "labels": pod["metadata"]["labels"]},
               "containers": [{"name": "agent", "usage": {"cpu": "250m", "memory": "64Mi"}}]}
    try:
        api.create_namespaced_custom_object("metrics.k8s.io", "v1beta1", NS, "pods", metrics)
    except client.ApiException as exc:  # the emulator may not serve this group
        pytest.skip(f"the emulator serves no metrics.k8s.io: {exc.status}")
    assert staging.usage(["bot-shared"])["bot-shared"].cpu_cores == pytest.approx(0.25)
    assert production.usage(["bot-shared"]) == {}


def test_in_a_cluster_a_site_id_of_the_pods_own_is_warned_about(kube_api):
    """A pod's data directory is its own (deploy/ uses an emptyDir): an id generated there would
    change with every pod, and the workers would refuse each other's instances."""
    def orch(site_per_pod):
        return KubernetesOrchestrator(api_client=kube_api.api_client(), namespace=NS,
                                      options=ClusterOptions(site="site-0a1b2c"),
                                      site_per_pod=site_per_pod)

    answer = orch(True).ping()
    assert answer.startswith("API ok at")
    assert "warning: CLAWORC_SITE_ID is not set" in answer and "site-0a1b2c" in answer
    assert "CLAWORC_SITE_ID" not in orch(False).ping()
