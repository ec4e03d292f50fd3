"""Two Claworc installations (sites) on one real Docker daemon: neither sees, adopts or deletes
the other's workloads; workloads made before sites existed are adopted by their own site."""

import pytest

from orchestrators.base import LABEL_SITE, FinalError, Status
from orchestrators.docker import DockerOrchestrator, volume_names

pytestmark = pytest.mark.docker


@pytest.fixture
def sites(docker_client, agent_image, tmp_path):
    def site(site_id):
        config = tmp_path / site_id
        config.mkdir()
        return DockerOrchestrator(config_dir=str(config), privileged=False, init=True,
                                  timeout=30, site=site_id)

    return site("site-staging"), site("site-production")


def _volumes(docker_client, name):
    return sorted(v.name for v in docker_client.volumes.list(filters={"name": f"claworc-{name}-"}))


def test_two_sites_never_see_adopt_or_delete_each_others_workloads(
        docker_client, sites, make_spec):
    staging, production = sites
    spec = make_spec("shared")
    observed = staging.ensure(spec)
    assert observed.status is Status.RUNNING
    box = docker_client.api.inspect_container(spec.name)
    assert box["Config"]["Labels"][LABEL_SITE] == "site-staging"
    volumes = _volumes(docker_client, spec.name)
    assert volumes == sorted(volume_names(spec.name).values())
    assert all(docker_client.api.inspect_volume(v)["Labels"][LABEL_SITE] == "site-staging"
               for v in volumes)

    # Listing: each site sees only its own.
    assert spec.name in staging.status_all() and spec.name in staging.volumes_all()
    assert spec.name not in production.status_all()
    assert spec.name not in production.volumes_all()

    # Adopting: production creating an instance of the same name is refused, clearly, and
    # leaves the other site's container untouched and nothing of its own behind.
    other = make_spec("shared")  # same name, another port pair
    with pytest.raises(FinalError, match="belongs to another Claworc installation"):
        production.ensure(other)
    with pytest.raises(FinalError, match="site site-staging"):
        production.recreate(other)
    assert docker_client.api.inspect_container(spec.name)["Id"] == box["Id"]
    assert docker_client.api.inspect_container(spec.name)["State"]["Running"]
    assert not (production.config_dir and
                __import__("os").path.exists(f"{production.config_dir}/{spec.name}"))
    assert production.status(spec.name).status is Status.ERROR

    # Deleting: refused for the container; the volumes stay.
    with pytest.raises(FinalError, match="another Claworc installation"):
        production.delete(spec.name, purge_volumes=True)
    assert docker_client.api.inspect_container(spec.name)["State"]["Running"]
    assert _volumes(docker_client, spec.name) == volumes

    # Staging deletes its container and keeps its volumes; production still cannot take them
    # over, and its purge of that name removes none of them.
    staging.delete(spec.name, purge_volumes=False)
    with pytest.raises(FinalError, match="volume named claworc-.*another Claworc installation"):
        production.ensure(other)
    assert not docker_client.containers.list(all=True, filters={"name": f"^/{spec.name}$"})
    production.delete(spec.name, purge_volumes=True)
    assert _volumes(docker_client, spec.name) == volumes
    staging.delete(spec.name, purge_volumes=True)
    assert _volumes(docker_client, spec.name) == []


def test_workloads_made_before_sites_existed_are_adopted_by_their_site(
        docker_client, sites, make_spec, t3_config_dir):
    staging, _ = sites
    spec = make_spec("legacy")
    legacy = DockerOrchestrator(config_dir=staging.config_dir, privileged=False, init=True,
                                timeout=30)  # no site: what older versions made
    legacy.ensure(spec)
    old_id = docker_client.api.inspect_container(spec.name)["Id"]
    assert LABEL_SITE not in docker_client.api.inspect_container(spec.name)["Config"]["Labels"]
    docker_client.containers.get(spec.name).exec_run(
        ["sh", "-c", "echo kept > /root/clawd/note"])
    # Still seen as its own, then labelled at its first converge; the data survives.
    assert staging.status_all()[spec.name].status is Status.RUNNING
    assert staging.ensure(spec).status is Status.RUNNING
    box = docker_client.api.inspect_container(spec.name)
    assert box["Id"] != old_id and box["Config"]["Labels"][LABEL_SITE] == "site-staging"
    out = docker_client.containers.get(spec.name).exec_run(["cat", "/root/clawd/note"])
    assert out.output.decode().strip() == "kept"


@pytest.mark.django_db
def test_reconcile_all_records_no_orphan_of_the_other_site(docker_client, sites, make_spec):
    from instances import services
    from instances.models import Activity, OrphanWorkload
    from orchestrators.registry import override

    staging, production = sites
    spec = make_spec("orphans")
    staging.ensure(spec)
    with override(production):
        services.instances_reconcile_all(owner="test-sites")
    assert not OrphanWorkload.objects.filter(name=spec.name).exists()
    assert not Activity.objects.filter(instance_name=spec.name).exists()
    with override(staging):
        services.instances_reconcile_all(owner="test-sites")
    assert OrphanWorkload.objects.filter(name=spec.name).exists()
