# The genesis-bench image: producer, worker, Flower, metrics and the simulator all run from it.
# Dependencies are installed from pyproject.toml alone, in their own layer, so editing the
# code rebuilds only the last layers. config/ and models/ are baked in as defaults; the compose
# file mounts the host's copies over them, so a new fine-tuned id needs no rebuild.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 --user-group genesis
WORKDIR /app

# Layer 1: third-party dependencies (with the [monitor] and [postgres] extras), from pyproject.toml only.
COPY pyproject.toml /src/pyproject.toml
COPY scripts/requirements-from-pyproject.py /src/scripts/
RUN python /src/scripts/requirements-from-pyproject.py /src/pyproject.toml monitor postgres > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Layer 2: the project itself (no dependency resolution: layer 1 has them all).
COPY producer /src/producer
COPY worker /src/worker
COPY shared /src/shared
COPY simulator /src/simulator
RUN pip install --no-deps /src && rm -rf /src

# Layer 3: what commands read from the working directory.
COPY alembic.ini ./
COPY config config
COPY models models
RUN mkdir -p reports var/journal && chown -R genesis:genesis reports var

USER genesis
CMD ["producer", "--help"]
