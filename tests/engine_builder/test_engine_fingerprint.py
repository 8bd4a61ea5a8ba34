from __future__ import annotations

import pytest

from engine_builder.errors import UsageError
from engine_builder.fingerprint import fingerprint, payload
from engine_builder.options import BuildOptions, ShapeRange

BASE = dict(
    onnx_sha256="ab" * 32,
    backend="tensorrt",
    backend_version="10.3.0",
    precision="int8",
    options={"workspace_mib": 1024, "dla_core": None, "shapes": {}},
    device={"l4t": "36.4.3", "module": "p3767-0005", "soc": "tegra234", "sm": "8.7", "arch": "aarch64"},
)
# Computed once; if this changes, every cached engine in every fleet is rebuilt: bump SCHEMA on purpose.
GOLDEN = "a8636c9a531a8d839ed2de355e415b2ea45f1c9d31503c4504b92626086e54f0"


def test_same_inputs_same_key_everywhere():
    assert fingerprint(**BASE) == fingerprint(**dict(BASE)) == GOLDEN


def test_key_ignores_dict_order_none_values_and_non_identity_fields():
    reordered = dict(BASE)
    reordered["options"] = {"shapes": {}, "workspace_mib": 1024}
    reordered["device"] = dict(reversed(list(BASE["device"].items())))
    reordered["device"]["hostname"] = "robot-17"
    reordered["device"]["module_name"] = "Jetson Orin Nano Developer Kit"
    assert fingerprint(**reordered) == fingerprint(**BASE)
    assert fingerprint(**dict(BASE, precision="INT8")) == fingerprint(**BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"onnx_sha256": "cd" * 32},
        {"backend": "trtexec"},
        {"backend_version": "8.6.2"},
        {"precision": "fp16"},
        {"options": {"workspace_mib": 2048, "shapes": {}}},
        {"options": {"workspace_mib": 1024, "shapes": {}, "dla_core": 0}},
        {"device": dict(BASE["device"], l4t="36.4.0")},
        {"device": dict(BASE["device"], module="p3767-0003")},
        {"device": dict(BASE["device"], soc="tegra194", sm="7.2")},
        {"device": dict(BASE["device"], sm="8.6")},
    ],
)
def test_any_change_gives_a_new_key(change):
    assert fingerprint(**dict(BASE, **change)) != fingerprint(**BASE)


def test_build_options_feed_the_key():
    a = BuildOptions(precision="fp16", shapes={"input": ShapeRange([1, 3, 8, 8], [4, 3, 8, 8], [8, 3, 8, 8])})
    b = BuildOptions(precision="fp16", shapes={"input": ShapeRange([1, 3, 8, 8], [2, 3, 8, 8], [8, 3, 8, 8])})
    key = dict(BASE, precision="fp16")
    assert fingerprint(**dict(key, options=a.engine_options("tensorrt"))) != fingerprint(
        **dict(key, options=b.engine_options("tensorrt"))
    )
    # where the timing cache lives does not change the engine
    c = BuildOptions(precision="fp16", timing_cache="/var/cache/a.cache")
    d = BuildOptions(precision="fp16", timing_cache=None)
    assert c.engine_options("tensorrt") == d.engine_options("tensorrt")


def test_payload_is_explicit_and_validated():
    body = payload(**BASE)
    assert body["device"] == {k: BASE["device"][k] for k in ("arch", "l4t", "module", "sm", "soc")}
    assert body["backend"] == {"name": "tensorrt", "version": "10.3.0"}
    with pytest.raises(UsageError):
        fingerprint(**dict(BASE, onnx_sha256="not-a-sha"))
    with pytest.raises(UsageError):
        fingerprint(**dict(BASE, precision="int4"))


def test_key_is_sha256_of_documented_canonical_json():
    """The key can be recomputed by anyone (e.g. the Ansible controller) from this exact text."""
    import hashlib

    canonical = (
        '{"backend":{"name":"tensorrt","version":"10.3.0"},'
        '"device":{"arch":"aarch64","l4t":"36.4.3","module":"p3767-0005","sm":"8.7","soc":"tegra234"},'
        '"onnx_sha256":"' + "ab" * 32 + '",'
        '"options":{"shapes":{},"workspace_mib":1024},"precision":"int8","schema":1}'
    )
    assert hashlib.sha256(canonical.encode()).hexdigest() == GOLDEN
