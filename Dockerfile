# The product as the README installs it (scripts/setup-venv.sh: `pip install -e .`), without the dev
# tools: the source tree stays the installed package, so the Russian adapter finds schemas/xsd beside
# it. Keys, passwords and state never enter the image (.dockerignore); docker-compose.yml mounts them.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY adapters ./adapters
COPY schemas ./schemas
# The console reads each reason code's meaning and remedy from here (broker/api/console/reasons.py).
COPY docs/reason-codes.md ./docs/reason-codes.md
RUN pip install --no-cache-dir -e . && broker --version
# Every mount point of docker-compose.yml exists in the image, owned by the service user: a named
# volume takes the owner and mode of the directory it is first mounted on.
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home exchange \
    && install -d -o exchange -g exchange -m 0700 /var/lib/exchange \
        /var/lib/exchange/country /var/lib/exchange/state /var/lib/exchange/kit \
        /var/lib/exchange/bundles /var/lib/exchange/topology
USER exchange
ENTRYPOINT ["broker"]
CMD ["--help"]
