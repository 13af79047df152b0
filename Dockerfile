# The pipeline's image: `mis worker` (the default), `mis demo`, `python connectors/register.py`.
# Configured by MIS_* environment variables (streams/config.py), like the local stack.
# The base image is pinned in .env (PYTHON_IMAGE) and passed in by docker-compose.yml.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# jemalloc: the workers' allocator (MIS_ALLOCATOR=auto, streams/runtime/memory.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project, installed in place: its code finds schemas/sql and connectors/ beside it, as in a
# checkout.
COPY . .
RUN pip install --no-deps -e . \
    && useradd --system --uid 10001 --home-dir /var/lib/mis --create-home mis

USER mis
# RocksDB tables of the worker; a volume in docker-compose.yml.
ENV MIS_DATA_DIR=/var/lib/mis/worker
EXPOSE 56066
CMD ["mis", "worker"]
