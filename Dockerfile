FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY adapters ./adapters
RUN pip install --no-cache-dir .
RUN useradd --system --home /app exchange && mkdir -p /var/lib/exchange && chown exchange /var/lib/exchange
USER exchange
ENTRYPOINT ["broker"]
