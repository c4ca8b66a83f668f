"""OAuth2 bearer-token check for N5g-eir (TS 33.501 §13.4.1, RFC 6750, RFC 7519).

The NRF issues the AMF a JWT (TS 29.510 AccessTokenClaims: iss, sub, aud, scope, exp);
the EIR, as NF service producer, verifies signature, expiry, audience and that the
scope names our service, ``n5g-eir-eic``. Outcomes as RFC 6750 §3.1 has them: no
token or a bad one is 401 with ``WWW-Authenticate: Bearer``; a good token without the
scope is 403 ``insufficient_scope``.

The time comes in as ``now`` (PyJWT's own exp/nbf checks read the clock, so they are
off), which keeps :meth:`TokenVerifier.verify` pure and testable without sleeping.
Only :func:`load_verifier` reads a file, once, at start-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = ["SCOPE", "AuthFailure", "TokenVerifier", "load_verifier"]

SCOPE = "n5g-eir-eic"
NF_TYPE = "5G_EIR"  # an access token's aud may name the producer's NF type (TS 33.501)
_REALM = f'Bearer realm="{SCOPE}"'
_CACHE_MAX = 1024  # distinct tokens remembered; an AMF reuses one token until it expires


@dataclass(frozen=True, slots=True)
class AuthFailure:
    status: int  # 401 or 403
    www_authenticate: str
    detail: str


@dataclass(frozen=True, slots=True)
class _Checked:
    """What is known about a token whose signature verified: expiry and the result of the
    checks that do not depend on time."""

    exp: float | None  # None: the token failed before its expiry was known
    nbf: float | None
    failure: AuthFailure | None


def _invalid(detail: str) -> AuthFailure:
    return AuthFailure(401, f'{_REALM}, error="invalid_token", error_description="{detail}"', detail)


_MISSING = AuthFailure(401, _REALM, "no bearer access token")
_NO_SCOPE = AuthFailure(
    403, f'{_REALM}, error="insufficient_scope", scope="{SCOPE}"', f"the access token's scope lacks {SCOPE}"
)


class TokenVerifier:
    """Verifies ``Authorization: Bearer <JWT>`` headers with one key."""

    def __init__(
        self,
        key: Any,
        algorithms: Sequence[str],
        *,
        audience: Sequence[str] = (),
        issuer: str | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        self._key = key
        self._algorithms = list(algorithms)
        self._audience = frozenset(audience)
        self._issuer = issuer
        self._leeway = leeway_s
        self._cache: dict[str, _Checked] = {}

    def verify(self, authorization: str | None, now: float) -> AuthFailure | None:
        """None when the request may proceed, else the failure to answer."""
        if not authorization:
            return _MISSING
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _MISSING  # another scheme (Basic, ...) carries no bearer token
        checked = self._cache.get(token)
        if checked is None:
            checked = self._check(token)
            if checked.exp is None:
                return checked.failure  # never verifies: not worth a cache slot
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()  # crude, but bounded; the next requests refill it
            self._cache[token] = checked
        if checked.exp is None:
            return checked.failure
        if checked.exp + self._leeway < now:
            return _invalid("the access token has expired")
        if checked.nbf is not None and now + self._leeway < checked.nbf:
            return _invalid("the access token is not valid yet")
        return checked.failure

    def _check(self, token: str) -> _Checked:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False,
                         "verify_iss": False},
            )  # fmt: skip
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            # TypeError: a token whose alg needs another key type than ours (ES256 vs an RSA key).
            return _Checked(None, None, _invalid(f"the access token does not verify: {type(exc).__name__}"))
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            return _Checked(None, None, _invalid("the access token has no exp claim"))
        nbf = claims.get("nbf")
        nbf_value = float(nbf) if isinstance(nbf, int | float) and not isinstance(nbf, bool) else None
        return _Checked(float(exp), nbf_value, self._claims_failure(claims))

    def _claims_failure(self, claims: dict[str, Any]) -> AuthFailure | None:
        if self._issuer is not None and claims.get("iss") != self._issuer:
            return _invalid("the access token was issued by another NRF")
        aud = claims.get("aud")
        auds = (
            {aud}
            if isinstance(aud, str)
            else {a for a in aud if isinstance(a, str)}
            if isinstance(aud, list)
            else set()
        )
        if not auds:
            return _invalid("the access token has no aud claim")
        if self._audience and not (auds & self._audience):
            return _invalid("the access token is for another NF")
        scope = claims.get("scope")
        if not isinstance(scope, str) or SCOPE not in scope.split():
            return _NO_SCOPE
        return None


def load_verifier(
    *,
    algorithms: Sequence[str],
    secret: str | None,
    key_file: str | None,
    audience: Sequence[str],
    issuer: str | None,
    leeway_s: float,
    nf_instance_id: str | None,
) -> TokenVerifier:
    """Build a verifier from configuration values, reading ``key_file`` once.

    A PEM public key is parsed here, so a bad key stops the start-up instead of failing
    every request. With no audience configured, a token must be meant for the NF type
    5G_EIR or for this instance (TS 33.501 §13.4.1.1: the producer checks the audience).
    """
    hmac = all(a.startswith("HS") for a in algorithms)
    key: Any
    if secret is not None:
        key = secret.encode()
    elif key_file is not None:
        with open(key_file, "rb") as f:
            data = f.read()
        key = data.strip() if hmac else load_pem_public_key(data)
    else:
        raise ValueError("oauth2: a secret or a key_file is required")
    accepted = tuple(audience) or tuple(a for a in (NF_TYPE, nf_instance_id) if a)
    return TokenVerifier(key, algorithms, audience=accepted, issuer=issuer, leeway_s=leeway_s)
