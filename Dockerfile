# s13eir container: the EIR with the example configuration; override any setting with
# S13EIR_* environment variables (e.g. S13EIR_NODE__ORIGIN_HOST) or mount your own YAML.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY dictionaries ./dictionaries
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /wheels

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /etc/s13eir --shell /usr/sbin/nologin s13eir
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir "$(ls /wheels/*.whl)[uvloop]" && rm -rf /wheels
COPY config /etc/s13eir
# Listen on all interfaces inside the container; metrics too, for the orchestrator's probes.
ENV S13EIR_LISTEN__0__ADDRESS=0.0.0.0 \
    S13EIR_METRICS__ADDRESS=0.0.0.0 \
    PYTHONUNBUFFERED=1
USER s13eir
EXPOSE 3868 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9100/readyz', timeout=2).status != 200)"
ENTRYPOINT ["s13eir"]
CMD ["serve", "--config", "/etc/s13eir/eir.yaml"]
