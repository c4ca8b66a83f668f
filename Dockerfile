# s13eir container image: the EIR with the example configuration in /etc/s13eir.
# Build with `make image` (deploy/image/build.sh), which picks the base: python:3.11-slim
# when it can be had, else a Debian bookworm base built from Debian's packages. Any
# base with Python >= 3.11 as python3 works: podman build --build-arg BASE=... .
# Override any setting with S13EIR_* environment variables (S13EIR_NODE__ORIGIN_HOST=...)
# or mount your own configuration over /etc/s13eir.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# uv, pinned with hashes, installs exactly the set in uv.lock (hash-checked). Debian's
# python3 has no venv module until python3-venv is installed; that stays in this stage.
COPY tools/uv-requirements.txt /tmp/uv-requirements.txt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
RUN { python3 -m venv /opt/uv 2>/dev/null || { rm -rf /opt/uv \
      && apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null \
      && python3 -m venv /opt/uv; }; } \
 && /opt/uv/bin/pip install -q --no-cache-dir --disable-pip-version-check \
      --require-hashes --no-deps -r /tmp/uv-requirements.txt
WORKDIR /src
COPY pyproject.toml uv.lock README.md LICENSE ./
COPY src ./src
COPY dictionaries ./dictionaries
# A regular (not editable) install of s13eir and its locked runtime dependencies into
# /opt/s13eir, byte-compiled so that start-up does not compile (the root filesystem may
# be read-only at run time).
ENV UV_PROJECT_ENVIRONMENT=/opt/s13eir UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy UV_NO_CACHE=1
RUN /opt/uv/bin/uv sync -q --locked --no-editable --extra uvloop --python python3 \
 && /opt/s13eir/bin/s13eir --version

FROM ${BASE}
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="s13eir" \
      org.opencontainers.image.description="Equipment Identity Register for S13/S13' (Diameter) and N5g-eir" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/s13eir/s13eir" \
      org.opencontainers.image.licenses="Apache-2.0"
# Only the installed environment crosses over: no uv, pip cache, wheels or sources.
COPY --from=build /opt/s13eir /opt/s13eir
COPY LICENSE /usr/share/doc/s13eir/LICENSE
COPY config /etc/s13eir
# Every listener on all interfaces: Diameter, N5g-eir, and metrics/health for the
# orchestrator's probes. PYTHONDONTWRITEBYTECODE: nothing is written at run time.
ENV PATH=/opt/s13eir/bin:$PATH \
    S13EIR_LISTEN__0__ADDRESS=0.0.0.0 \
    S13EIR_SBI__ADDRESS=0.0.0.0 \
    S13EIR_METRICS__ADDRESS=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Numeric, so that Kubernetes' runAsNonRoot can check it without an /etc/passwd entry.
USER 10001:10001
WORKDIR /etc/s13eir
# Podman before 5.3 refuses to run an image exposing an SCTP port (podman#23911): build
# with --build-arg EXPOSE_SCTP= for such a host. Kubernetes and docker accept it.
ARG EXPOSE_SCTP=3868/sctp
EXPOSE 3868 ${EXPOSE_SCTP} 8080 9100
# Liveness, not readiness: /healthz is 200 while the process serves (lists loading
# included); /readyz is 503 when the shared store regressed, for every node at once,
# which must not restart them all.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/opt/s13eir/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["s13eir"]
CMD ["serve", "--config", "/etc/s13eir/eir.yaml"]
