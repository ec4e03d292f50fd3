import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from instances.models import Instance, PortAllocation
from orchestrators import registry


def grant_desktops(user):
    user.user_permissions.add(Permission.objects.get(codename="use_desktop",
                                                     content_type__app_label="desktops"))
    return get_user_model().objects.get(pk=user.pk)  # permissions are cached per object


def grant_view(user):
    """What the status pages ask for: seeing instances (not using their desktops)."""
    user.user_permissions.add(Permission.objects.get(codename="view_instance",
                                                     content_type__app_label="instances"))
    return get_user_model().objects.get(pk=user.pk)


def make_instance(name: str, *, port: int = 30100, status: str = "running",
                  desired_state: str = "running") -> Instance:
    """An instance row with its ports, without the signals (no task is wanted here)."""
    (instance,) = Instance.objects.bulk_create([Instance(
        display_name=name, name=name, status=status, desired_state=desired_state)])
    instance = Instance.objects.get(name=name)
    PortAllocation.objects.create(instance=instance, port_chrome=port, port_terminal=port + 1)
    return Instance.objects.select_related("ports").get(pk=instance.pk)


@pytest.fixture
def desk_user(db):
    user = get_user_model().objects.create_user("desk", password="pw-for-tests-only")
    return grant_desktops(user)


@pytest.fixture
def plain_user(db):
    return grant_view(get_user_model().objects.create_user(
        "plain", password="pw-for-tests-only", is_staff=True))


@pytest.fixture(autouse=True)
def _fresh_registry():
    from desktops import upstream

    registry.clear_cache()
    upstream.forget()
    yield
    registry.clear_cache()
    upstream.forget()
