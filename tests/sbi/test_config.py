"""The sbi: configuration section: off when absent, documented key by key in the example."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from s13eir.config import ConfigError, NrfConfig, OAuth2Config, SbiConfig
from s13eir.config_loading import config_from_mapping, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
NODE = {"origin_host": "eir.example", "origin_realm": "example"}


def test_off_when_absent() -> None:
    assert config_from_mapping({"node": NODE}).sbi is None
    assert load_config(CONFIG_DIR / "eir-lab.yaml", environ={}).sbi is None


def test_the_example_states_every_sbi_key() -> None:
    data = yaml.safe_load((CONFIG_DIR / "eir.yaml").read_text())
    assert set(data["sbi"]) == set(SbiConfig.__struct_fields__)
    assert set(data["sbi"]["oauth2"]) == set(OAuth2Config.__struct_fields__)
    assert set(data["sbi"]["nrf"]) == set(NrfConfig.__struct_fields__)
    # ... with the defaults spelt out: the example is the default server on 127.0.0.1:8080.
    cfg = load_config(CONFIG_DIR / "eir.yaml", environ={})
    assert cfg.sbi == SbiConfig()
    assert (cfg.sbi.address, cfg.sbi.port, cfg.sbi.tls) == ("127.0.0.1", 8080, False)


def test_minimal_section_and_environment() -> None:
    cfg = config_from_mapping({"node": NODE, "sbi": {"port": "8081", "tls": "false"}})
    assert cfg.sbi is not None and cfg.sbi.port == 8081
    env = {"S13EIR_SBI": "{address: 0.0.0.0}", "S13EIR_SBI__PORT": "9000", "S13EIR_SBI__NRF__URL": "http://nrf:80"}
    cfg = config_from_mapping({"node": NODE}, environ=env)
    assert cfg.sbi is not None and (cfg.sbi.address, cfg.sbi.port, cfg.sbi.nrf.url) == (
        "0.0.0.0",
        9000,
        "http://nrf:80",
    )


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"tls": True}, "needs certfile and keyfile"),
        ({"tls": True, "certfile": "c.pem"}, "needs certfile and keyfile"),
        ({"cafile": "ca.pem"}, "needs tls: true"),
        ({"port": 70000}, "sbi.port"),
        ({"max_concurrent_streams": 0}, "max_concurrent_streams"),
        ({"nrf": {"url": "nrf.example:8000"}}, "not an http:// or https:// URL"),
        ({"nrf": {"nf_instance_id": "eir-1"}}, "not a UUID"),
        ({"nrf": {"heartbeat_s": 0}}, "heartbeat_s"),
        ({"listen": 1}, "unknown field listen"),
    ],
)
def test_errors(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"node": NODE, "sbi": section}, source="eir.yaml")
    assert message in str(info.value)
