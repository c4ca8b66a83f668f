"""Logs, metrics and the HTTP endpoint that exposes them (/metrics, /healthz, /readyz).

The request path only increments plain Python integers on a ``Metrics`` object; turning
them into Prometheus families happens at scrape time, off the hot path.
"""
