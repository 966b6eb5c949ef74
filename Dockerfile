# The Kibitz server image, built from the wheel the project's build makes (the bundle is inside it):
#   ./scripts/setup.sh && .venv/bin/python build/build.py --wheel dist/pip
#   docker build -t kibitz-server .
#   docker run -p 8787:8787 -p 8788:8788 -v kibitz-state:/var/lib/kibitz kibitz-server
# Extra flags go after the image name (e.g. --turn-url turn:relay.example:3478 --public-url https://…).
# tests/e2e/test_installed.py runs these steps (venv, pip install, this ENTRYPOINT) outside docker.
FROM python:3.11-slim
RUN useradd --system --home-dir /var/lib/kibitz --create-home kibitz
COPY dist/pip/ /tmp/wheels/
RUN python -m venv /opt/kibitz \
    && /opt/kibitz/bin/pip install --no-cache-dir "$(ls /tmp/wheels/kibitz-*.whl)[server]" \
    && rm -rf /tmp/wheels
USER kibitz
ENV KIBITZ_STATE_DIR=/var/lib/kibitz
VOLUME /var/lib/kibitz
EXPOSE 8787 8788
HEALTHCHECK CMD ["/opt/kibitz/bin/python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8787/healthz', timeout=3)"]
ENTRYPOINT ["/opt/kibitz/bin/kibitz", "serve", "--host", "0.0.0.0", "--port", "8787"]
