from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from s13eir.config import Config, ConfigError, ListenConfig, PeerConfig
from s13eir.config_files import FilesMissing, NamedFile, check_files, file_problem, missing_files, named_files
from s13eir.config_loading import config_from_mapping, load_config
from s13eir.decision.model import ListKind, UnknownPolicy
from s13eir.decision.policy import Policy

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
NODE = {"origin_host": "eir.example", "origin_realm": "example"}


def minimal(**sections: Any) -> dict[str, Any]:
    return {"node": dict(NODE), **sections}


def error(data: dict[str, Any], environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, environ=environ, source="config/eir.yaml")
    return str(info.value)


# --- the shipped examples -----------------------------------------------------------------


def test_example_config_loads() -> None:
    cfg = load_config(CONFIG_DIR / "eir.yaml", environ={})
    assert cfg.node.origin_host == "eir.epc.mnc001.mcc001.3gppnetwork.org"
    assert cfg.node.origin_realm == "epc.mnc001.mcc001.3gppnetwork.org"
    assert cfg.listen == (ListenConfig(transport="tcp", address="127.0.0.1", port=3868),)
    assert cfg.peers.allow_unknown is False
    hosts = {p.origin_host: p.origin_realm for p in cfg.peers.list}
    assert hosts["mme1.epc.mnc001.mcc001.3gppnetwork.org"] == "epc.mnc001.mcc001.3gppnetwork.org"
    assert hosts["mme.s13eir.test"] == "s13eir.test"
    assert (cfg.metrics.address, cfg.metrics.port) == ("127.0.0.1", 9100)
    assert cfg.policy == Config(node=cfg.node).policy  # policy defaults
    formats = {Path(s.path).name: s.format for s in cfg.store.lists}
    assert formats == {
        "blacklist.csv": "dirbs-blacklist",
        "greylist.csv": "csv",
        "exceptions.csv": "dirbs-exceptions",
        "rules.yaml": "rules-yaml",
    }
    for src in cfg.store.lists:
        assert Path(src.path) == CONFIG_DIR / "lists" / Path(src.path).name


def test_example_config_states_every_key() -> None:
    """Every key of the schema appears in the documented example (a default spelt out)."""
    import yaml

    data = yaml.safe_load((CONFIG_DIR / "eir.yaml").read_text())
    cfg = config_from_mapping({"node": NODE})
    for section in ("node", "diameter", "peers", "policy", "store", "logging", "metrics", "detection", "modes"):
        assert set(data[section]) == set(getattr(cfg, section).__struct_fields__), section
    assert set(data["peers"]["list"][0]) == set(PeerConfig.__struct_fields__)
    rules = cfg.detection.rules
    for name in rules.__struct_fields__:
        assert set(data["detection"]["rules"][name]) == set(getattr(rules, name).__struct_fields__), name
    assert config_from_mapping(data, environ={}).detection == cfg.detection  # the defaults, spelt out
    for sub in ("pairing", "grace"):
        assert set(data["modes"][sub]) == set(getattr(cfg.modes, sub).__struct_fields__), sub
    assert config_from_mapping(data, environ={}).modes == cfg.modes
    assert set(data["listen"][0]) == set(ListenConfig.__struct_fields__)


def test_lab_config_loads() -> None:
    cfg = load_config(CONFIG_DIR / "eir-lab.yaml", environ={})
    assert cfg.peers.allow_unknown is True
    assert cfg.store.lists == ()


# --- defaults -----------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = config_from_mapping({"node": NODE})
    n = cfg.node
    assert (n.product_name, n.vendor_id, n.firmware_revision, n.host_ip_addresses) == ("s13eir", 0, 100, ())
    assert cfg.listen == (ListenConfig(transport="tcp", address="127.0.0.1", port=3868),)
    d = cfg.diameter
    assert (d.max_message_size, d.cer_timeout_s, d.dpa_timeout_s, d.dictionaries) == (65536, 10, 5, ())
    assert (cfg.peers.allow_unknown, cfg.peers.watchdog_interval_s, cfg.peers.list) == (False, 30, ())
    p = cfg.policy
    assert p.unknown_imei is UnknownPolicy.WHITELISTED
    assert (p.malformed_imei.value, p.imeisv_in_imei.value, p.check_destination_realm) == ("reject", "reject", False)
    assert p.store_unavailable.value == "last_known" and p.decision_policy() == Policy()
    assert (cfg.store.backend, cfg.store.bloom_fp_rate, cfg.store.lists) == ("embedded", 0.001, ())
    lg = cfg.logging
    assert (lg.level, lg.format, lg.log_whitelisted, lg.mask_imsi) == ("info", "json", False, False)
    assert (cfg.metrics.enabled, cfg.metrics.address, cfg.metrics.port) == (True, "127.0.0.1", 9100)


def test_list_source_takes_an_optional_list() -> None:
    lists = [{"path": "a.csv", "format": "csv"}, {"path": "b", "format": "dirbs-blacklist", "list": "grey"}]
    cfg = config_from_mapping(minimal(store={"lists": lists}))
    assert [s.list for s in cfg.store.lists] == [None, ListKind.GREY]


def test_strings_convert_and_enum_decodes() -> None:
    cfg = config_from_mapping(
        minimal(listen=[{"port": "3870"}], peers={"allow_unknown": "true"}, policy={"unknown_imei": "unknown"})
    )
    assert cfg.listen[0].port == 3870
    assert cfg.peers.allow_unknown is True
    assert cfg.policy.unknown_imei is UnknownPolicy.UNKNOWN


def test_config_is_frozen() -> None:
    cfg = config_from_mapping({"node": NODE})
    with pytest.raises(AttributeError):
        cfg.node.origin_host = "x"  # type: ignore[misc]


def test_host_ip_addresses_fall_back_to_concrete_listen_addresses() -> None:
    listen = [{"address": "0.0.0.0"}, {"address": "10.0.0.1"}, {"address": "10.0.0.1", "port": 3869}]
    assert config_from_mapping(minimal(listen=listen)).host_ip_addresses == ("10.0.0.1",)
    node = {**NODE, "host_ip_addresses": ["192.0.2.1"]}
    assert config_from_mapping({"node": node, "listen": listen}).host_ip_addresses == ("192.0.2.1",)


# --- environment overrides ----------------------------------------------------------------


def test_env_overrides() -> None:
    env = {
        "S13EIR_LISTEN__0__PORT": "3870",
        "S13EIR_NODE__ORIGIN_HOST": "eir2.example",
        "S13EIR_POLICY__UNKNOWN_IMEI": "unknown",
        "S13EIR_PEERS__ALLOW_UNKNOWN": "true",
        "S13EIR_peers__list__0__origin_host": "mme1.example",  # key names in any case
        "S13EIR_PEERS__LIST__0__ORIGIN_REALM": "example",
        "S13EIR_PEERS__LIST__1__ORIGIN_HOST": "mme2.example",
        "S13EIR_PEERS__LIST__1__ORIGIN_REALM": "example",
        "S13EIR_PEERS__LIST__1__ADDRESSES": "[192.0.2.1, 192.0.2.2]",
        "S13EIR_DIAMETER__CER_TIMEOUT_S": "2.5",
        "HOME": "/root",  # not ours: ignored
    }
    cfg = config_from_mapping({"node": NODE}, environ=env)
    assert cfg.listen == (ListenConfig(port=3870),)
    assert cfg.node.origin_host == "eir2.example"
    assert cfg.policy.unknown_imei is UnknownPolicy.UNKNOWN
    assert cfg.peers.allow_unknown is True
    assert [p.origin_host for p in cfg.peers.list] == ["mme1.example", "mme2.example"]
    assert cfg.peers.list[1].addresses == ("192.0.2.1", "192.0.2.2")
    assert cfg.diameter.cer_timeout_s == 2.5


def test_env_override_edits_an_existing_list_item_and_keeps_the_rest() -> None:
    data = minimal(listen=[{"address": "10.0.0.1", "port": 3868}, {"address": "10.0.0.2"}])
    cfg = config_from_mapping(data, environ={"S13EIR_LISTEN__1__PORT": "3871"})
    assert cfg.listen == (ListenConfig(address="10.0.0.1"), ListenConfig(address="10.0.0.2", port=3871))
    assert data["listen"][1] == {"address": "10.0.0.2"}  # the caller's mapping is not modified


def test_env_string_setting_keeps_text_as_written() -> None:
    cfg = config_from_mapping({"node": NODE}, environ={"S13EIR_NODE__PRODUCT_NAME": "0100"})
    assert cfg.node.product_name == "0100"


def test_env_unknown_key_names_the_variable() -> None:
    msg = error({"node": NODE}, {"S13EIR_NODE__ORIGN_HOST": "x"})
    assert msg.startswith("S13EIR_NODE__ORIGN_HOST: no such setting 'node.orign_host'")
    assert "origin_host" in msg
    assert error({"node": NODE}, {"S13EIR_NOPE": "1"}).startswith("S13EIR_NOPE: no such setting 'nope'")


def test_env_list_index_past_the_end() -> None:
    msg = error({"node": NODE}, {"S13EIR_PEERS__LIST__1__ORIGIN_HOST": "x"})
    assert msg.startswith("S13EIR_PEERS__LIST__1__ORIGIN_HOST: ")
    assert "item 1 can only be added after item 0" in msg


def test_env_list_needs_a_number_and_scalars_have_no_children() -> None:
    assert "expected an item number" in error({"node": NODE}, {"S13EIR_LISTEN__PORT": "1"})
    assert "is a single value" in error({"node": NODE}, {"S13EIR_NODE__ORIGIN_HOST__X": "1"})


def test_env_bad_value_names_the_variable() -> None:
    msg = error({"node": NODE}, {"S13EIR_LISTEN__0__PORT": "abc"})
    assert msg == (
        "config/eir.yaml: Expected int, got str - at $.listen[0].port"
        " (value from environment variable S13EIR_LISTEN__0__PORT)"
    )


def test_load_config_reads_os_environ_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "eir.yaml"
    path.write_text("node: {origin_host: a.example, origin_realm: example}\n")
    monkeypatch.setenv("S13EIR_METRICS__PORT", "9200")
    assert load_config(path).metrics.port == 9200
    assert load_config(path, environ={}).metrics.port == 9100


# --- error messages -----------------------------------------------------------------------


def test_bad_type_message() -> None:
    assert error(minimal(listen=[{"port": "x"}])) == "config/eir.yaml: Expected int, got str - at $.listen[0].port"


def test_bad_enum_lists_the_choices() -> None:
    msg = error(minimal(policy={"unknown_imei": "maybe"}))
    assert msg.startswith("config/eir.yaml: Invalid enum value 'maybe' - at $.policy.unknown_imei")
    assert "whitelisted, greylisted, unknown" in msg
    assert "tcp" in error(minimal(listen=[{"transport": "udp"}]))


def test_unknown_key_message() -> None:
    msg = error(minimal(peers={"allow_unknwon": True}))
    assert "unknown field allow_unknwon - at $.peers" in msg
    assert "allow_unknown" in msg.split("(", 1)[1]


def test_missing_required_key() -> None:
    assert "origin_realm" in error({"node": {"origin_host": "a"}})
    assert "node" in error({})


@pytest.mark.parametrize(
    ("sections", "where"),
    [
        ({"listen": [{"port": 70000}]}, "$.listen[0].port"),
        ({"metrics": {"port": -1}}, "$.metrics.port"),
        ({"peers": {"watchdog_interval_s": 5}}, "$.peers.watchdog_interval_s"),
        ({"store": {"bloom_fp_rate": 0}}, "$.store.bloom_fp_rate"),
        ({"store": {"bloom_fp_rate": 0.5}}, "$.store.bloom_fp_rate"),
        ({"diameter": {"max_message_size": 1000}}, "$.diameter.max_message_size"),
        ({"store": {"lists": [{"path": "x"}]}}, "$.store.lists[0]"),
        ({"store": {"lists": [{"path": "x", "format": "xml"}]}}, "$.store.lists[0].format"),
    ],
)
def test_range_checks(sections: dict[str, Any], where: str) -> None:
    assert where in error(minimal(**sections))


def test_empty_origin_host_rejected() -> None:
    assert "$.node.origin_host" in error({"node": {**NODE, "origin_host": ""}})


def test_host_ip_address_must_be_an_ip() -> None:
    assert "'eir.example' is not an IP address" in error({"node": {**NODE, "host_ip_addresses": ["eir.example"]}})


def test_cross_field_checks() -> None:
    peers = [{"origin_host": "MME.example", "origin_realm": "r"}, {"origin_host": "mme.example", "origin_realm": "r"}]
    assert "peers.list[1].origin_host: 'mme.example' is already listed at peers.list[0]" in error(
        minimal(peers={"list": peers})
    )
    assert "listen: at least one address" in error(minimal(listen=[]))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: no such file"


def test_bad_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "eir.yaml"
    path.write_text("node:\n  origin_host: a\n  origin_realm: [b\nlisten: []\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert str(info.value).startswith(f"{path}: invalid YAML at line 4, column ")


def test_duplicate_yaml_key_rejected(tmp_path: Path) -> None:
    path = tmp_path / "eir.yaml"
    path.write_text("node: {origin_host: a, origin_realm: b}\npeers: {}\npeers: {allow_unknown: true}\n")
    with pytest.raises(ConfigError, match="line 3, column 1: duplicate key 'peers'"):
        load_config(path, environ={})


@pytest.mark.parametrize(("text", "got"), [("", "an empty document"), ("- a\n", "a list"), ("3\n", "3")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    path = tmp_path / "eir.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"top level must be a mapping of sections, got {got}"):
        load_config(path, environ={})


# --- list paths ---------------------------------------------------------------------------


def test_relative_list_paths_resolve_against_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "eir.yaml").write_text(
        "node: {origin_host: a, origin_realm: b}\n"
        "store:\n"
        "  lists:\n"
        "    - {path: lists/black.csv, format: dirbs-blacklist}\n"
        "    - {path: ../shared/grey.csv, format: csv, list: grey}\n"
        "    - {path: /abs/white.csv, format: csv, list: white}\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("etc/eir.yaml", environ={})
    assert [s.path for s in cfg.store.lists] == [
        str(conf / "lists" / "black.csv"),
        str(tmp_path / "shared" / "grey.csv"),
        "/abs/white.csv",
    ]
    assert all(os.path.isabs(s.path) for s in cfg.store.lists)


def test_config_from_mapping_resolves_against_base_dir() -> None:
    data = minimal(store={"lists": [{"path": "x/y.csv", "format": "csv"}]})
    assert config_from_mapping(data, base_dir="/srv/eir").store.lists[0].path == "/srv/eir/x/y.csv"
    assert config_from_mapping(data).store.lists[0].path == "x/y.csv"


def test_relative_sbi_paths_resolve_against_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "eir.yaml").write_text(
        "node: {origin_host: a, origin_realm: b}\n"
        "sbi: {tls: true, certfile: tls/eir.pem, keyfile: /abs/eir.key, oauth2: {key_file: ../nrf.pem}}\n"
    )
    monkeypatch.chdir(tmp_path)
    sbi = load_config("etc/eir.yaml", environ={}).sbi
    assert sbi is not None
    assert (sbi.certfile, sbi.keyfile, sbi.oauth2.key_file) == (
        str(conf / "tls" / "eir.pem"),
        "/abs/eir.key",
        str(tmp_path / "nrf.pem"),
    )


# --- the files a configuration names ------------------------------------------------------


def test_named_files_give_every_file_with_its_key() -> None:
    data = minimal(
        diameter={"dictionaries": ["/d/vendor.yaml", "/d/more"]},
        store={"lists": [{"path": "/l/black.csv", "format": "dirbs-blacklist"}, {"path": "/l/g.csv", "format": "csv"}]},
        sync={"snapshots": [{"path": "/s/black.csv", "format": "dirbs-blacklist", "list": "black"}]},
        sbi={
            "tls": True,
            "certfile": "/t/eir.pem",
            "keyfile": "/t/eir.key",
            "cafile": "/t/ca.pem",
            "oauth2": {"enabled": True, "algorithms": ["RS256"], "key_file": "/t/nrf.pem"},
            "nrf": {"url": "https://nrf.example", "cafile": "/t/nrf-ca.pem"},
        },
    )
    assert named_files(config_from_mapping(data)) == [
        NamedFile("diameter.dictionaries[0]", "/d/vendor.yaml", True, True),
        NamedFile("diameter.dictionaries[1]", "/d/more", True, True),
        NamedFile("store.lists[0].path", "/l/black.csv", True),
        NamedFile("store.lists[1].path", "/l/g.csv", True),
        NamedFile("sync.snapshots[0].path", "/s/black.csv", False),  # only `s13eir sync` reads it
        NamedFile("sbi.certfile", "/t/eir.pem", True),
        NamedFile("sbi.keyfile", "/t/eir.key", True),
        NamedFile("sbi.cafile", "/t/ca.pem", True),
        NamedFile("sbi.oauth2.key_file", "/t/nrf.pem", True),
        NamedFile("sbi.nrf.cafile", "/t/nrf-ca.pem", True),
    ]


def test_named_files_the_node_does_not_read() -> None:
    """Named, but not read by `s13eir serve`: lists of a Redis-backed node, TLS files with
    tls off, the key of oauth2 turned off, the CA of an NRF that is not configured."""
    data = minimal(
        store={"backend": "redis", "lists": [{"path": "/l/black.csv", "format": "dirbs-blacklist"}]},
        sbi={"certfile": "/t/eir.pem", "oauth2": {"key_file": "/t/nrf.pem"}, "nrf": {"cafile": "/t/nrf-ca.pem"}},
    )
    files = named_files(config_from_mapping(data))
    assert [f.key for f in files] == ["store.lists[0].path", "sbi.certfile", "sbi.oauth2.key_file", "sbi.nrf.cafile"]
    assert not any(f.read_by_node for f in files)
    assert named_files(config_from_mapping(minimal())) == []


def test_the_example_configs_name_only_readable_files() -> None:
    for name in ("eir.yaml", "eir-lab.yaml"):
        assert missing_files(load_config(CONFIG_DIR / name, environ={})) == [], name


def test_file_problem(tmp_path: Path) -> None:
    (tmp_path / "ok.pem").write_text("x")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    assert file_problem(str(tmp_path / "ok.pem")) is None
    assert file_problem(str(tmp_path / "fifo")) is None  # opened without blocking
    assert file_problem(str(tmp_path / "nope.pem")) == "no such file"
    assert file_problem(str(tmp_path / "ok.pem" / "x")) == "no such file"
    assert file_problem(str(tmp_path / "dir")) == "is a directory, not a file"
    assert file_problem(str(tmp_path / "dir"), directory_ok=True) is None
    assert file_problem(str(tmp_path / "nope"), directory_ok=True) == "no such file or directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_file_problem_unreadable(tmp_path: Path) -> None:
    key = tmp_path / "eir.key"
    key.write_text("secret")
    key.chmod(0)
    assert file_problem(str(key)) == "permission denied"


def test_check_files_names_each_missing_file_with_its_key(tmp_path: Path) -> None:
    (tmp_path / "eir.key").write_text("k")
    data = minimal(
        store={"lists": [{"path": str(tmp_path / "black.csv"), "format": "dirbs-blacklist"}]},
        sync={"snapshots": [{"path": str(tmp_path / "snap.csv"), "format": "dirbs-blacklist", "list": "black"}]},
        sbi={"tls": True, "certfile": "/etc/tls/eir.pem", "keyfile": str(tmp_path / "eir.key")},
    )
    cfg = config_from_mapping(data)
    with pytest.raises(FilesMissing) as info:
        check_files(cfg, "config/eir.yaml")
    assert str(info.value).splitlines() == [
        f"config/eir.yaml: store.lists[0].path: {tmp_path / 'black.csv'}: no such file",
        f"config/eir.yaml: sync.snapshots[0].path: {tmp_path / 'snap.csv'}: no such file",
        "config/eir.yaml: sbi.certfile: /etc/tls/eir.pem: no such file",
    ]
    assert isinstance(info.value, ConfigError)
    with pytest.raises(FilesMissing) as info:
        check_files(cfg, "config/eir.yaml", node_only=True)  # the node does not read sync's snapshots
    assert [p.file.key for p in info.value.problems] == ["store.lists[0].path", "sbi.certfile"]
