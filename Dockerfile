# The Claworc dashboard: gunicorn (uvicorn worker) serving Django and the desktop websockets (static files through WhiteNoise), Celery worker
# and beat, all from one image; the role is the command (all, web, worker, beat). See docs/docker.md.
#
#   docker build -t claworc-dashboard .
#   docker build --build-arg BASE_IMAGE=claworc-base:bookworm -t claworc-dashboard .
#
# Any Debian-like image with Python 3.11 and python3-venv works as the base
# (scripts/build-base-image.sh makes one where no image can be pulled).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONPATH=/app \
    CLAWORC_DATA_DIR=/app/data \
    CLAWORC_DOCKER_CONFIG_DIR=/app/data/configs \
    CLAWORC_BIND=0.0.0.0:8000

# A venv works the same on python:3.11-slim and on Debian's own python3 (which refuses system-wide
# pip installs). The dashboard drops to the unprivileged `claworc` user after start-up (entrypoint).
RUN python3 -m venv /opt/venv \
 && (getent passwd claworc >/dev/null || useradd --system --uid 10001 --user-group \
      --home-dir /home/claworc --create-home --shell /usr/sbin/nologin claworc)

WORKDIR /app
# Dependencies first, in their own layer, so a code change does not reinstall them.
COPY pyproject.toml constraints.txt README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -q -c constraints.txt -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY claworc_site ./claworc_site
COPY instances ./instances
COPY orchestrators ./orchestrators
COPY desktops ./desktops
RUN pip install -q --no-deps -c constraints.txt . && pip check
COPY manage.py Procfile ./
COPY templates ./templates
COPY docker/entrypoint.sh /usr/local/bin/claworc-entrypoint
# Static files are baked in; the throwaway keys only let settings load during the build.
RUN SECRET_KEY=collectstatic-only \
    CLAWORC_ENCRYPTION_KEY="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --no-input -v 0 \
 && mkdir -p /app/data/configs && chown -R claworc:claworc /app/data \
 && chmod 755 /usr/local/bin/claworc-entrypoint

EXPOSE 8000
# /health answers for the web server (roles all and web); compose turns it off for worker and beat.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
ENTRYPOINT ["claworc-entrypoint"]
CMD ["all"]
