# tokviz on a GPU server: `docker build -t tokviz .`
#   docker run --gpus all -p 8080:8080 -v tokviz-hf:/data/hf tokviz
# CPU only: the same image without `--gpus all` (the device is picked automatically).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

RUN pip install --no-cache-dir uv
# A C compiler: on CPU, the bundled model's fast path compiles its kernels on first use (README: Performance).
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# Dependencies first (PyPI's torch wheel is the CUDA build), so code edits rebuild fast.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY tokviz_app ./tokviz_app
COPY assets ./assets
RUN uv sync --frozen --no-dev

# Run as an unprivileged user; the Hugging Face cache (and tokviz's converted
# bundled model) live on a volume so downloads survive container restarts.
RUN useradd --create-home --uid 1000 tokviz && mkdir -p /data/hf && chown tokviz:tokviz /data/hf
ENV HF_HOME=/data/hf \
    TOKVIZ_HOST=0.0.0.0 \
    TOKVIZ_PORT=8080
VOLUME ["/data/hf"]
USER tokviz
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["uv", "run", "--frozen", "--no-dev", "--no-sync", "tokviz"]
