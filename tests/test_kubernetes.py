"""The Kubernetes manifests in deploy/kubernetes, checked offline.

The kustomize base (and the example overlay with the SCTP component) is rendered here in
Python, for the few kustomization keys the manifests use (any other key fails the test,
so the render stays faithful); when ``kubectl`` is on PATH the render is also compared
with ``kubectl kustomize``. Every rendered document is validated against the Kubernetes
1.31 schemas (kubernetes-validate, strict: unknown fields are errors), and the semantics
that matter are checked: probes, security context, ports against the Services and the
configuration, the mounted configuration as s13eir loads it with the pod's environment,
the PodDisruptionBudget, the sizing arithmetic, and the Redis chart values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import s13eir
from s13eir.backends.redis_client import parse_sentinel_url
from s13eir.config import Config, ConfigError
from s13eir.config_files import missing_files
from s13eir.config_loading import load_config

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
EXAMPLE = KUBE / "overlays" / "example"
CLUSTER = KUBE / "overlays" / "redis-cluster"
K8S_VERSION = "1.31"
CONFIG_PATH = "/etc/s13eir/eir.yaml"
POD_NAME = "s13eir-eir-5d9c7b8f4-x2x9z"
REDIS_PASSWORD = "0123456789abcdef"

MiB = 2**20


# --- a kustomize renderer for the subset the manifests use ---------------------------------


class Unsupported(Exception):
    """A kustomization uses something this renderer does not implement."""


KEYS = {
    "Kustomization": {
        "apiVersion",
        "kind",
        "resources",
        "components",
        "configMapGenerator",
        "generatorOptions",
        "images",
        "namespace",
        "patches",
    },
    "Component": {"apiVersion", "kind", "resources", "patches"},
}
API_VERSIONS = {"Kustomization": "kustomize.config.k8s.io/v1beta1", "Component": "kustomize.config.k8s.io/v1alpha1"}
NAMESPACED = {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget"}


def _only(d: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = set(d) - allowed
    if extra:
        raise Unsupported(f"{where}: {sorted(extra)} not implemented by the test's renderer")


def _kustomization(directory: Path, kind: str) -> dict[str, Any]:
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    k.setdefault("kind", "Kustomization")
    if k["kind"] != kind:
        raise Unsupported(f"{directory}: expected a {kind}, got {k['kind']}")
    if k.get("apiVersion", API_VERSIONS[kind]) != API_VERSIONS[kind]:
        raise Unsupported(f"{directory}: apiVersion {k['apiVersion']}")
    _only(k, KEYS[kind], str(directory))
    for gen in k.get("configMapGenerator", []):
        _only(gen, {"name", "files"}, f"{directory}: configMapGenerator")
    _only(k.get("generatorOptions", {}), {"disableNameSuffixHash"}, f"{directory}: generatorOptions")
    for image in k.get("images", []):
        _only(image, {"name", "newName", "newTag", "digest"}, f"{directory}: images")
    for patch in k.get("patches", []):
        _only(patch, {"target", "patch"}, f"{directory}: patches")
        _only(patch["target"], {"kind", "name"}, f"{directory}: patches.target")
    return k


def render(directory: Path) -> list[dict[str, Any]]:
    """What ``kustomize build directory`` gives, for the keys in KEYS."""
    return _build(directory, _kustomization(directory, "Kustomization"), [])


def _build(directory: Path, k: dict[str, Any], docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    docs = list(docs)
    for res in k.get("resources", []):
        path = (directory / res).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for comp in k.get("components", []):
        path = (directory / comp).resolve()
        docs = _build(path, _kustomization(path, "Component"), docs)
    hashed = not k.get("generatorOptions", {}).get("disableNameSuffixHash", False)
    for gen in k.get("configMapGenerator", []):
        data = {}
        for entry in gen["files"]:
            key, _, rel = entry.rpartition("=")
            data[key or Path(rel).name] = (directory / rel).read_text()
        name = f"{gen['name']}-{configmap_hash(data)}" if hashed else gen["name"]
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
        for doc in docs:
            _rename_configmap(doc, gen["name"], name)
    for patch in k.get("patches", []):
        targets = [d for d in docs if _matches(d, patch["target"])]
        if not targets:
            raise Unsupported(f"{directory}: patch target {patch['target']} matches nothing")
        ops = yaml.safe_load(patch["patch"])
        if not isinstance(ops, list):
            raise Unsupported(f"{directory}: only JSON 6902 patches are implemented")
        for doc in targets:
            for op in ops:
                _json_patch(doc, op)
    if "namespace" in k:
        for doc in docs:
            if doc["kind"] not in NAMESPACED:
                raise Unsupported(f"namespace for a {doc['kind']}")
            doc["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for doc in docs:
            for c in _containers(doc):
                c["image"] = _new_image(c["image"], image)
    return docs


def _matches(doc: dict[str, Any], target: dict[str, str]) -> bool:
    return doc["kind"] == target.get("kind", doc["kind"]) and doc["metadata"]["name"] == target.get(
        "name", doc["metadata"]["name"]
    )


def configmap_hash(data: dict[str, str]) -> str:
    """kustomize's name suffix: sha256 of Go's JSON of {kind, name, data}, with the name
    left empty as kustomize's hasher does, first 10 hex digits with 0 1 3 a e replaced."""
    text = json.dumps({"data": data, "kind": "ConfigMap", "name": ""}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)  # fmt: skip
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)  # Go's encoding/json escapes these
    return hashlib.sha256(text.encode()).hexdigest()[:10].translate(str.maketrans("013ae", "ghkmt"))


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    return doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(doc)
    return [] if spec is None else spec.get("initContainers", []) + spec["containers"]


def _rename_configmap(doc: dict[str, Any], old: str, new: str) -> None:
    spec = _pod_spec(doc)
    if spec is None:
        return
    refs = [v["configMap"] for v in spec.get("volumes", []) if "configMap" in v]
    refs += [s["configMap"] for v in spec.get("volumes", []) for s in v.get("projected", {}).get("sources", [])
             if "configMap" in s]  # fmt: skip
    for c in _containers(doc):
        refs += [
            e["valueFrom"]["configMapKeyRef"] for e in c.get("env", []) if "configMapKeyRef" in e.get("valueFrom", {})
        ]
        refs += [e["configMapRef"] for e in c.get("envFrom", []) if "configMapRef" in e]
    for ref in refs:
        if ref["name"] == old:
            ref["name"] = new


def _json_patch(doc: dict[str, Any], op: dict[str, Any]) -> None:
    if op["op"] not in ("add", "replace", "remove"):
        raise Unsupported(f"JSON patch op {op['op']}")
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node: Any = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        if op["op"] == "add":
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif op["op"] == "replace":
            node[int(last)] = copy.deepcopy(op["value"])
        else:
            del node[int(last)]
    elif op["op"] == "remove":
        del node[last]
    else:
        if op["op"] == "replace" and last not in node:
            raise Unsupported(f"replace of a missing {op['path']}")
        node[last] = copy.deepcopy(op["value"])


def _new_image(current: str, image: dict[str, str]) -> str:
    name, tag, digest = _split_image(current)
    if name != image["name"]:
        return current
    name = image.get("newName", name)
    if "digest" in image:
        return f"{name}@{image['digest']}"
    tag = image.get("newTag", tag)
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _split_image(ref: str) -> tuple[str, str, str]:
    ref, _, digest = ref.partition("@")
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "", digest
    return name, tag, digest


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return render(BASE)


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    return render(EXAMPLE)


@pytest.fixture(scope="module")
def cluster() -> list[dict[str, Any]]:
    return render(CLUSTER)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def deployments(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "Deployment"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def port_by_name(c: dict[str, Any], name: str) -> dict[str, Any]:
    (p,) = [p for p in c.get("ports", []) if p["name"] == name]
    return p


def expand_env(
    env: list[dict[str, Any]], field_values: dict[str, str], secrets: dict[tuple[str, str], str]
) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: ``$(VAR)`` refers to a variable
    defined earlier in the list (undefined ones would stay literal: an error here), ``$$`` escapes."""
    out: dict[str, str] = {}

    def expand(name: str, value: str) -> str:
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            var = m.group(1)
            assert var in out, f"{name}: $({var}) is not defined before it: Kubernetes would leave it as is"
            return out[var]

        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, value)

    for e in env:
        if "value" in e:
            out[e["name"]] = expand(e["name"], e["value"])
        elif "fieldRef" in e["valueFrom"]:
            out[e["name"]] = field_values[e["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = secrets[(ref["name"], ref["key"])]
    return out


def image_env() -> dict[str, str]:
    """The S13EIR_* variables the Dockerfile's ENV instructions put into the image."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for token in shlex.split(line[4:]):
                key, _, value = token.partition("=")
                if key.startswith("S13EIR_"):
                    env[key] = value
    return env


def pod_environment(deployment: dict[str, Any]) -> dict[str, str]:
    fields = {"metadata.name": POD_NAME}
    secrets = {("s13eir-redis-auth", "redis-password"): REDIS_PASSWORD}
    return {**image_env(), **expand_env(container(deployment).get("env", []), fields, secrets)}


def mounted_file(docs: list[dict[str, Any]], deployment: dict[str, Any], directory: Path) -> Path:
    """The configuration file the container's args name, taken from the ConfigMap volume
    mounted there, written into ``directory``."""
    c = container(deployment)
    args = c["args"]
    path = args[args.index("--config") + 1]
    spec = deployment["spec"]["template"]["spec"]
    mounts = [m for m in c["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, f"{path} is not inside exactly one volume mount"
    mount = mounts[0]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    cm = one(docs, "ConfigMap", volume["configMap"]["name"])
    rel = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    items = volume["configMap"].get("items")
    key = next(i["key"] for i in items if i["path"] == rel) if items else rel
    assert key in cm["data"], f"{path}: key {key} is not in ConfigMap {cm['metadata']['name']}"
    directory.mkdir(parents=True, exist_ok=True)
    file = directory / Path(path).name
    file.write_text(cm["data"][key])
    return file


def mounted_config(docs: list[dict[str, Any]], deployment: dict[str, Any], directory: Path) -> Config:
    """The mounted configuration as s13eir loads it with the container's environment."""
    return load_config(mounted_file(docs, deployment, directory), environ=pod_environment(deployment))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# --- the renderer itself ---------------------------------------------------------------------


def test_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(Unsupported, match="commonLabels"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator: [{name: x, literals: [a=b]}]\n")
    with pytest.raises(Unsupported, match="literals"):
        render(tmp_path)


def test_configmap_hash_is_kustomizes() -> None:
    # Values printed by kustomize v5.5.0 (kubectl kustomize) for these data.
    assert configmap_hash({"f.yaml": 'a: "<b>&é"\n'}) == "kcdkt6b86g"
    assert configmap_hash({"f.yaml": 'a: "<b>&é"\n', "g.txt": "x\ty\n"}) == "4576hdt6hb"


@pytest.mark.parametrize("directory", [BASE, EXAMPLE, CLUSTER], ids=["base", "example", "redis-cluster"])
def test_render_equals_kubectl_kustomize(directory: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the Python render is not compared with kustomize's")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = [d for d in yaml.safe_load_all(out.stdout) if d]

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(render(directory), key=key) == sorted(theirs, key=key)


# --- schema ------------------------------------------------------------------------------------


def test_every_document_is_valid_kubernetes(
    base: list[dict[str, Any]], example: list[dict[str, Any]], cluster: list[dict[str, Any]]
) -> None:
    kinds = sorted(d["kind"] for d in base)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "PodDisruptionBudget", "Service", "Service", "Service"]
    for doc in base + example + cluster:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_is_strict(base: list[dict[str, Any]]) -> None:
    doc = copy.deepcopy(one(base, "Deployment", "s13eir-eir"))
    container(doc)["livenessProbe"]["httpGet"]["paht"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- the configuration ---------------------------------------------------------------------


def _leaves(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {p: v for k, sub in value.items() for p, v in _leaves(sub, f"{path}.{k}" if path else k).items()}
    if isinstance(value, list) and value and path != "store.lists":
        return {p: v for i, sub in enumerate(value) for p, v in _leaves(sub, f"{path}[{i}]").items()}
    return {path: value}


def test_cluster_configuration_is_the_example_with_cluster_keys() -> None:
    example = _leaves(yaml.safe_load((ROOT / "config" / "eir.yaml").read_text()))
    cluster = _leaves(yaml.safe_load((BASE / "eir.yaml").read_text()))
    assert set(example) == set(cluster)
    changed = {k: cluster[k] for k in example if example[k] != cluster[k]}
    assert changed == {
        "listen[0].address": "0.0.0.0",
        "metrics.address": "0.0.0.0",
        "sync.metrics.address": "0.0.0.0",
        "sbi.address": "0.0.0.0",
        "store.backend": "redis",
        "store.lists": [],
        "store.redis.url": "redis+sentinel://s13eir-redis:26379/mymaster",
    }


def test_cluster_configuration_is_valid_for_s13eir() -> None:
    config = load_config(BASE / "eir.yaml", environ={})
    assert config.store.backend == "redis" and not config.store.lists
    assert missing_files(config) == []  # names no file the image lacks
    sentinel = parse_sentinel_url(config.store.redis.url)
    assert (sentinel.hosts, sentinel.service) == ([("s13eir-redis", 26379)], "mymaster")


def test_the_nodes_load_the_mounted_configuration_with_their_environment(
    base: list[dict[str, Any]], tmp_path: Path
) -> None:
    eir = one(base, "Deployment", "s13eir-eir")
    config = mounted_config(base, eir, tmp_path)
    c = container(eir)
    # Every listener on the pod's interfaces, on the container's ports.
    assert [(x.transport, x.address, x.port) for x in config.listen] == [
        ("tcp", "0.0.0.0", port_by_name(c, "diameter")["containerPort"])
    ]
    assert port_by_name(c, "diameter")["protocol"] == "TCP"
    assert config.metrics.enabled
    assert (config.metrics.address, config.metrics.port) == ("0.0.0.0", port_by_name(c, "metrics")["containerPort"])
    assert config.sbi is not None and not config.sbi.tls
    assert (config.sbi.address, config.sbi.port) == ("0.0.0.0", port_by_name(c, "sbi")["containerPort"])
    assert {p["name"] for p in c["ports"]} == {"diameter", "sbi", "metrics"}
    # A Diameter identity per pod, and the password from the Secret in the url.
    assert config.node.origin_host == f"{POD_NAME}.eir.epc.mnc001.mcc001.3gppnetwork.org"
    sentinel = parse_sentinel_url(config.store.redis.url)
    assert sentinel.password == REDIS_PASSWORD
    file_url = parse_sentinel_url(load_config(BASE / "eir.yaml", environ={}).store.redis.url)
    assert (sentinel.hosts, sentinel.service, sentinel.db) == (file_url.hosts, file_url.service, file_url.db)


def test_the_writer_loads_the_same_configuration(base: list[dict[str, Any]], tmp_path: Path) -> None:
    eir, sync = one(base, "Deployment", "s13eir-eir"), one(base, "Deployment", "s13eir-sync")
    assert container(sync)["args"] == ["sync", "--config", CONFIG_PATH]
    assert container(eir)["args"] == ["serve", "--config", CONFIG_PATH]
    assert container(sync)["command"] == container(eir)["command"] == ["s13eir"]
    node, writer = mounted_config(base, eir, tmp_path / "eir"), mounted_config(base, sync, tmp_path / "sync")
    assert writer.store == node.store  # the same Redis, prefix and Bloom settings
    # Two writers are safe only because one lock makes exactly one of them write.
    assert sync["spec"]["replicas"] == 2 and writer.sync.lock_ttl_s > 0


def test_service_links_stay_off_because_they_would_stop_the_start(base: list[dict[str, Any]], tmp_path: Path) -> None:
    # What enableServiceLinks: true would add: {NAME}_SERVICE_HOST, {NAME}_PORT... for every
    # Service of the namespace, here ours and the Redis chart's.
    names = [d["metadata"]["name"] for d in base if d["kind"] == "Service"] + ["s13eir-redis"]
    links = {}
    for name in names:
        var = name.upper().replace("-", "_")
        links |= {f"{var}_SERVICE_HOST": "10.0.0.10", f"{var}_PORT": "tcp://10.0.0.10:3868"}
    assert any(v.startswith("S13EIR_") for v in links)
    eir = one(base, "Deployment", "s13eir-eir")
    file = mounted_file(base, eir, tmp_path)
    load_config(file, environ=pod_environment(eir))  # loads without them
    with pytest.raises(ConfigError, match="no such setting"):
        load_config(file, environ={**pod_environment(eir), **links})
    for d in deployments(base):
        assert d["spec"]["template"]["spec"]["enableServiceLinks"] is False, d["metadata"]["name"]


def test_image_is_the_package_version(base: list[dict[str, Any]], example: list[dict[str, Any]]) -> None:
    for d in deployments(base):
        assert container(d)["image"] == f"s13eir:{s13eir.__version__}"
    for d in deployments(example):
        assert container(d)["image"] == f"registry.example.org/s13eir:{s13eir.__version__}"
        assert d["metadata"]["namespace"] == "s13eir"


# --- the pods ------------------------------------------------------------------------------


def test_security_context(base: list[dict[str, Any]]) -> None:
    for d in deployments(base):
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            sc = {**spec.get("securityContext", {}), **c.get("securityContext", {})}  # the container's win
            assert sc["runAsNonRoot"] is True
            assert (sc["runAsUser"], sc["runAsGroup"]) == (10001, 10001)  # the Dockerfile's USER
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert "privileged" not in sc
        assert spec["automountServiceAccountToken"] is False
        assert "hostNetwork" not in spec


def test_probes(base: list[dict[str, Any]], tmp_path: Path) -> None:
    eir = one(base, "Deployment", "s13eir-eir")
    c = container(eir)
    metrics_port = mounted_config(base, eir, tmp_path).metrics.port

    def target(probe: dict[str, Any]) -> tuple[str, int]:
        get = probe["httpGet"]
        port = get["port"] if isinstance(get["port"], int) else port_by_name(c, get["port"])["containerPort"]
        return get["path"], port

    # Liveness never on /readyz: Redis away makes every node unready at once.
    assert target(c["livenessProbe"]) == ("/healthz", metrics_port)
    assert target(c["readinessProbe"]) == ("/readyz", metrics_port)
    # Liveness and readiness start once the lists are loaded (/readyz 200), with time for a
    # big list: 34 s measured for a Bloom rebuild of 10 million IMEIs, about 60 s per
    # 10 million from list files.
    startup = c["startupProbe"]
    assert target(startup) == ("/readyz", metrics_port)
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["timeoutSeconds"] < c[probe]["periodSeconds"]
    # The writer serves sync.metrics: liveness /healthz, readiness /readyz (a stalled feed).
    sync = container(one(base, "Deployment", "s13eir-sync"))
    writer = mounted_config(base, one(base, "Deployment", "s13eir-sync"), tmp_path / "sync")
    assert [p["containerPort"] for p in sync["ports"]] == [writer.sync.metrics.port]
    assert writer.sync.metrics.address == "0.0.0.0"
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = sync[probe]["httpGet"]
        assert get["path"] == path and port_by_name(sync, get["port"])["containerPort"] == writer.sync.metrics.port
    assert "startupProbe" not in sync  # the HTTP server is up before the first import


def test_shutdown_has_time_for_the_dpr(base: list[dict[str, Any]], tmp_path: Path) -> None:
    eir = one(base, "Deployment", "s13eir-eir")
    config = mounted_config(base, eir, tmp_path)
    pre_stop = container(eir)["lifecycle"]["preStop"]["sleep"]["seconds"]
    # Node.stop waits up to dpa_timeout_s + 1 for the DPAs, then up to 2 s for sighting events.
    needed = pre_stop + config.diameter.dpa_timeout_s + 1 + 2
    assert eir["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= needed + 5


def test_spread_over_nodes(base: list[dict[str, Any]]) -> None:
    eir = one(base, "Deployment", "s13eir-eir")
    assert eir["spec"]["replicas"] == 3
    assert eir["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    template = eir["spec"]["template"]
    by_key = {c["topologyKey"]: c for c in template["spec"]["topologySpreadConstraints"]}
    hostname = by_key["kubernetes.io/hostname"]
    assert hostname["whenUnsatisfiable"] == "DoNotSchedule" and hostname["maxSkew"] == 1
    for constraint in by_key.values():
        assert constraint["labelSelector"]["matchLabels"] == eir["spec"]["selector"]["matchLabels"]


def _quantity(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "": 1}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m is not None and m.group(2) in units, q
    return float(m.group(1)) * units[m.group(2)]


def test_node_memory_follows_the_sizing_arithmetic(base: list[dict[str, Any]], tmp_path: Path) -> None:
    eir = one(base, "Deployment", "s13eir-eir")
    config = mounted_config(base, eir, tmp_path)
    # deploy/kubernetes/README.md: measured baseline, Bloom filter of 10 million IMEIs at the
    # configured false-positive rate, the answer cache at about 680 B an entry; at peak a
    # second Bloom filter while one loads.
    baseline, imeis, per_cache_entry = 76.8 * MiB, 10_000_000, 680
    bloom = imeis * -math.log(config.store.bloom_fp_rate) / math.log(2) ** 2 / 8
    steady = baseline + bloom + config.store.redis.cache_entries * per_cache_entry
    peak = steady + 2 * bloom
    resources = container(eir)["resources"]
    assert _quantity(resources["requests"]["memory"]) >= steady * 1.3
    assert _quantity(resources["limits"]["memory"]) >= peak * 1.5
    assert _quantity(resources["requests"]["memory"]) <= _quantity(resources["limits"]["memory"])
    assert _quantity(resources["requests"]["cpu"]) >= 1
    assert "cpu" not in resources["limits"]  # CFS throttling would stall the event loop
    sync = container(one(base, "Deployment", "s13eir-sync"))["resources"]
    assert _quantity(sync["limits"]["memory"]) >= 2 * 146 * MiB  # a 10-million import peaked at 146 MiB


# --- Services and the PodDisruptionBudget ----------------------------------------------------


@pytest.mark.parametrize("render_of", ["base", "example"])
def test_services_reach_the_eir_pods_on_their_ports(render_of: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(render_of)
    eir = one(docs, "Deployment", "s13eir-eir")
    sync = one(docs, "Deployment", "s13eir-sync")
    labels = eir["spec"]["template"]["metadata"]["labels"]
    c = container(eir)
    services = [d for d in docs if d["kind"] == "Service"]
    for svc in services:
        selector = svc["spec"]["selector"]
        assert selects(selector, labels), svc["metadata"]["name"]
        assert not selects(selector, sync["spec"]["template"]["metadata"]["labels"])
        for port in svc["spec"]["ports"]:
            target = port_by_name(c, port["targetPort"])
            assert target["protocol"] == port["protocol"], svc["metadata"]["name"]
            assert target["containerPort"] == port["port"]
    # Every container port is behind a Service.
    served = {p["targetPort"] for svc in services for p in svc["spec"]["ports"]}
    assert served == {p["name"] for p in c["ports"]}
    by_name = {s["metadata"]["name"]: s for s in services}
    assert by_name["s13eir-sbi"]["spec"]["ports"][0]["appProtocol"] == "kubernetes.io/h2c"
    metrics = by_name["s13eir-metrics"]
    assert metrics["spec"]["clusterIP"] == "None"
    annotations = metrics["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics["spec"]["ports"][0]["port"] == 9100
    assert "annotations" not in eir["spec"]["template"]["metadata"]  # scraped once, through the Service


def test_sctp_component_adds_a_listener_its_port_and_service(
    base: list[dict[str, Any]], example: list[dict[str, Any]], tmp_path: Path
) -> None:
    assert not any(p["protocol"] == "SCTP" for d in base if d["kind"] == "Service" for p in d["spec"]["ports"])
    eir = one(example, "Deployment", "s13eir-eir")
    config = mounted_config(example, eir, tmp_path)
    sctp = port_by_name(container(eir), "diameter-sctp")
    assert sctp["protocol"] == "SCTP"
    assert [(x.transport, x.address, x.port) for x in config.listen] == [
        ("tcp", "0.0.0.0", 3868),
        ("sctp", "0.0.0.0", sctp["containerPort"]),
    ]
    svc = one(example, "Service", "s13eir-diameter-sctp")
    assert svc["spec"]["ports"][0]["protocol"] == "SCTP"


def test_disruption_budget_covers_the_eir_pods(base: list[dict[str, Any]]) -> None:
    pdb = one(base, "PodDisruptionBudget", "s13eir-eir")
    eir = one(base, "Deployment", "s13eir-eir")
    assert pdb["spec"]["selector"] == eir["spec"]["selector"]
    assert selects(pdb["spec"]["selector"]["matchLabels"], eir["spec"]["template"]["metadata"]["labels"])
    replicas = eir["spec"]["replicas"]
    allowed = pdb["spec"].get("maxUnavailable", replicas - pdb["spec"].get("minAvailable", replicas))
    assert allowed == 1


def test_deployment_selectors_match_their_pods(base: list[dict[str, Any]]) -> None:
    selectors = []
    for d in deployments(base):
        selector = d["spec"]["selector"]["matchLabels"]
        assert selects(selector, d["spec"]["template"]["metadata"]["labels"])
        selectors.append(selector)
    # Neither Deployment's selector takes the other's pods.
    for d in deployments(base):
        assert sum(selects(s, d["spec"]["template"]["metadata"]["labels"]) for s in selectors) == 1


# --- Redis: the chart values -----------------------------------------------------------------


def _values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((KUBE / "redis" / name).read_text())
    return values


def _redis_settings(text: str) -> dict[str, str]:
    return dict(line.split(None, 1) for line in text.splitlines() if line.strip() and not line.startswith("#"))


def test_redis_sentinel_values_match_the_url_and_the_secret(base: list[dict[str, Any]], tmp_path: Path) -> None:
    values = _values("values-sentinel.yaml")
    eir = one(base, "Deployment", "s13eir-eir")
    url = parse_sentinel_url(mounted_config(base, eir, tmp_path).store.redis.url)
    # bitnami/redis names its Service after fullnameOverride; 26379 is its Sentinel port.
    assert url.hosts == [(values["fullnameOverride"], 26379)]
    assert values["architecture"] == "replication"
    assert values["sentinel"]["enabled"] is True
    assert values["sentinel"]["masterSet"] == url.service
    assert values["replica"]["replicaCount"] == 3
    assert values["sentinel"]["quorum"] == 2
    # s13eir sends the password to the master only, never to the Sentinels.
    assert values["auth"]["enabled"] is True and values["auth"]["sentinel"] is False
    assert values["replica"]["persistence"]["enabled"] is True
    settings = _redis_settings(values["commonConfiguration"])
    assert settings["appendonly"] == "yes"
    assert settings["maxmemory-policy"] == "noeviction"
    _check_secret_and_policy(
        values["auth"]["existingSecret"], values["auth"]["existingSecretPasswordKey"], values, base
    )


def test_redis_cluster_values_and_overlay(cluster: list[dict[str, Any]], tmp_path: Path) -> None:
    values = _values("values-cluster.yaml")
    for d in deployments(cluster):
        config = mounted_config(cluster, d, tmp_path / d["metadata"]["name"])
        # bitnami/redis-cluster's Service is named after fullnameOverride, port 6379.
        assert config.store.redis.url == f"redis://:{REDIS_PASSWORD}@{values['fullnameOverride']}:6379/0"
        assert config.store.redis.cluster is True
    assert values["fullnameOverride"] == _values("values-sentinel.yaml")["fullnameOverride"]
    assert values["cluster"]["nodes"] >= 3 * (1 + values["cluster"]["replicas"]) and values["cluster"]["replicas"] >= 1
    assert values["usePassword"] is True
    assert values["persistence"]["enabled"] is True
    assert values["redis"]["useAOFPersistence"] == "yes"
    assert _redis_settings(values["redis"]["configmap"])["maxmemory-policy"] == "noeviction"
    _check_secret_and_policy(values["existingSecret"], values["existingSecretPasswordKey"], values, cluster)


def _check_secret_and_policy(secret: str, key: str, values: dict[str, Any], base: list[dict[str, Any]]) -> None:
    for d in deployments(base):
        refs = [e["valueFrom"]["secretKeyRef"] for e in container(d)["env"] if "secretKeyRef" in e.get("valueFrom", {})]
        assert refs == [{"name": secret, "key": key}], d["metadata"]["name"]
        # With allowExternal: false the chart's NetworkPolicy admits pods labelled <fullname>-client.
        assert values["networkPolicy"]["allowExternal"] is False
        assert d["spec"]["template"]["metadata"]["labels"][f"{values['fullnameOverride']}-client"] == "true"
