FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 ledger

# Dependencies first, from the runtime lock alone (exact versions, every file checked against its
# hash; no embedded PostgreSQL or Redis, no test tools): this layer is rebuilt only when the lock
# changes, not on every source edit.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/runtime.txt

# Then the project itself, without dependencies (the lock already installed them).
COPY pyproject.toml README.md Procfile ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY cli ./cli
COPY migrations ./migrations
RUN pip install --no-cache-dir --no-deps .

USER ledger
ENV HOST=0.0.0.0 PORT=8000 MINI_LEDGER_HOME=/tmp/mini-ledger
# The API (and its /metrics), Flower, a worker's metrics exporter (WORKER_METRICS_PORT).
EXPOSE 8000 5555 9100
CMD ["mini-ledger", "api"]
