FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 ledger

COPY pyproject.toml README.md ./
COPY api ./api
COPY worker ./worker
COPY shared ./shared
COPY migrations ./migrations
COPY Procfile ./
RUN pip install --no-cache-dir -e .

USER ledger
ENV HOST=0.0.0.0 PORT=8000 MINI_LEDGER_HOME=/tmp/mini-ledger
EXPOSE 8000 5555
CMD ["mini-ledger", "api"]
