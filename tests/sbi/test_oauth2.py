"""OAuth2 bearer tokens (TS 33.501 §13.4.1): HS256 with a shared secret, RS256 and ES256 with
a PEM public key; 401 + WWW-Authenticate when missing or invalid, 403 without the scope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from s13eir.config import ConfigError
from s13eir.config_loading import config_from_mapping
from s13eir.sbi.oauth2 import TokenVerifier, load_verifier
from tests.sbi_helpers import PEI_BLACK, RESOURCE, check_response, h2_client, problem, running_sbi

NOW = 1_800_000_000.0
SECRET = "a shared secret of the NRF and the EIR"


def claims(**over: Any) -> dict[str, Any]:
    base = {"iss": "nrf-1", "sub": "amf-1", "aud": "5G_EIR", "scope": "n5g-eir-eic namf-comm", "exp": NOW + 600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def hs(**over: Any) -> str:
    return jwt.encode(claims(**over), SECRET, algorithm="HS256")


def verifier(**kw: Any) -> TokenVerifier:
    args: dict[str, Any] = {"algorithms": ("HS256",), "secret": SECRET, "key_file": None, "audience": (),
                            "issuer": None, "leeway_s": 5.0, "nf_instance_id": "inst-1"}  # fmt: skip
    args.update(kw)
    return load_verifier(**args)


def test_hs256_outcomes() -> None:
    v = verifier()
    assert v.verify(f"Bearer {hs()}", NOW) is None
    assert v.verify(f"bearer  {hs(aud=['x', 'inst-1'])}", NOW) is None  # our instance id is an audience too
    cases = {
        None: (401, 'Bearer realm="n5g-eir-eic"'),
        "Basic dXNlcjpwYXNz": (401, 'Bearer realm="n5g-eir-eic"'),
        "Bearer": (401, 'Bearer realm="n5g-eir-eic"'),
        "Bearer not.a.jwt": (401, "invalid_token"),
        f"Bearer {jwt.encode(claims(), 'another secret, shared with nobody', algorithm='HS256')}": (
            401,
            "invalid_token",
        ),
        f"Bearer {hs(exp=NOW - 60)}": (401, "expired"),
        f"Bearer {hs(exp=None)}": (401, "no exp"),
        f"Bearer {hs(nbf=NOW + 60)}": (401, "not valid yet"),
        f"Bearer {hs(aud='5G_UDM')}": (401, "another NF"),
        f"Bearer {hs(aud=None)}": (401, "no aud"),
        f"Bearer {hs(scope='namf-comm')}": (403, 'error="insufficient_scope", scope="n5g-eir-eic"'),
        f"Bearer {hs(scope=None)}": (403, "insufficient_scope"),
    }
    for header, (status, text) in cases.items():
        failure = v.verify(header, NOW)
        assert failure is not None, header
        assert failure.status == status, header
        assert text in failure.www_authenticate + failure.detail, (header, failure)
    assert v.verify(f"Bearer {hs(exp=NOW - 3)}", NOW) is None  # within the leeway


def test_expiry_is_checked_on_every_use_of_a_cached_token() -> None:
    v = verifier()
    token = f"Bearer {hs(exp=NOW + 10)}"
    assert v.verify(token, NOW) is None
    failure = v.verify(token, NOW + 60)
    assert failure is not None and "expired" in failure.detail


def test_issuer_and_configured_audience() -> None:
    v = verifier(issuer="nrf-1", audience=("eir-a",))
    assert v.verify(f"Bearer {hs(aud='eir-a')}", NOW) is None
    assert v.verify(f"Bearer {hs()}", NOW) is not None  # 5G_EIR no longer accepted
    assert v.verify(f"Bearer {hs(aud='eir-a', iss='nrf-2')}", NOW) is not None


def pem_key(tmp_path: Path, private: Any) -> Path:
    path = tmp_path / "nrf.pub.pem"
    path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_public_key_algorithms(tmp_path: Path, alg: str) -> None:
    private = rsa.generate_private_key(65537, 2048) if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())
    v = verifier(algorithms=("RS256", "ES256"), secret=None, key_file=str(pem_key(tmp_path, private)))
    assert v.verify(f"Bearer {jwt.encode(claims(), private, algorithm=alg)}", NOW) is None
    other = ec.generate_private_key(ec.SECP256R1())
    assert v.verify(f"Bearer {jwt.encode(claims(), other, algorithm='ES256')}", NOW) is not None
    # Algorithm confusion: an HS256 token signed with the public key as secret is refused.
    forged = jwt.encode(claims(), "x" * 32, algorithm="HS256")
    assert v.verify(f"Bearer {forged}", NOW) is not None


def test_config_rules() -> None:
    node = {"origin_host": "a", "origin_realm": "b"}
    bad = [
        {"enabled": True},
        {"enabled": True, "secret": "s", "key_file": "k"},
        {"enabled": True, "secret": "s", "algorithms": ["RS256"]},
        {"enabled": True, "key_file": "k", "algorithms": ["HS256", "RS256"]},
        {"enabled": True, "key_file": "k", "algorithms": []},
        {"enabled": True, "key_file": "k", "algorithms": ["none"]},
    ]
    for oauth2 in bad:
        with pytest.raises(ConfigError):
            config_from_mapping({"node": node, "sbi": {"oauth2": oauth2}})
    cfg = config_from_mapping(
        {"node": node, "sbi": {"oauth2": {"enabled": True, "secret": "s", "algorithms": ["HS256"]}}}
    )
    assert cfg.sbi is not None and cfg.sbi.oauth2.enabled


async def test_over_http2(tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    key = pem_key(tmp_path, private)
    oauth2 = {"enabled": True, "algorithms": ["ES256"], "key_file": str(key)}
    async with running_sbi(oauth2=oauth2) as sbi, h2_client(sbi.url) as client:
        now_claims = claims(exp=2_000_000_000)
        good = jwt.encode(now_claims, private, algorithm="ES256")
        r = await client.get(RESOURCE, params={"pei": PEI_BLACK}, headers={"authorization": f"Bearer {good}"})
        check_response(r)
        assert r.json() == {"status": "BLACKLISTED"}
        r = await client.get(RESOURCE, params={"pei": PEI_BLACK})
        check_response(r)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="n5g-eir-eic"'
        problem(r)
        no_scope = jwt.encode({**now_claims, "scope": "nudm-sdm"}, private, algorithm="ES256")
        r = await client.get(RESOURCE, params={"pei": PEI_BLACK}, headers={"authorization": f"Bearer {no_scope}"})
        check_response(r)
        assert r.status_code == 403 and "insufficient_scope" in r.headers["www-authenticate"]
        expired = jwt.encode({**now_claims, "exp": 1_000_000_000}, private, algorithm="ES256")
        r = await client.get(RESOURCE, params={"pei": PEI_BLACK}, headers={"authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
