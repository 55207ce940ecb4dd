# The orders worker; `python -m service.gateway` runs the HTTP gateway from the same image.
# Only the service's own dependencies: no dev tools, no embedded mongod.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH="/app/.venv/bin:${PATH}"

RUN pip install --no-cache-dir uv

WORKDIR /app

# Dependencies first, so code edits do not reinstall them.
COPY pyproject.toml uv.lock ./
# The workspace's client member (read by uv, never installed here).
COPY clients ./clients
RUN uv sync --frozen --no-default-groups --no-install-project

COPY README.md ./
COPY orders_vocabulary ./orders_vocabulary
COPY schemas ./schemas
COPY service ./service
COPY orders_client ./orders_client
RUN uv sync --frozen --no-default-groups

RUN useradd --system --uid 10001 --no-create-home orders
USER orders

# /health/live, /health/ready and /metrics (ORDERS_HTTP_PORT), and the HTTP gateway
# (ORDERS_API_PORT), reachable from outside.
ENV ORDERS_HTTP_HOST=0.0.0.0 \
    ORDERS_API_HOST=0.0.0.0
EXPOSE 8081 8080

CMD ["faststream", "run", "--factory", "service.app:create_app"]
