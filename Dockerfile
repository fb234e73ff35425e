# The bot's image: `flowstate-bot run` (Socket Mode with SLACK_APP_TOKEN) or `run --http --host ...`,
# as the non-root user flowstate (uid 10001).  The README's "Running it for real" says how to run it.
#
# BASE is any image with Python 3.11+ (python3 and its venv module on PATH): the official
# python:3.11-slim by default, or Debian bookworm with Debian's python3, which tests/image/build
# makes from Debian's packages where no registry can be reached.  Without network access in the
# build, give pip the dependencies' wheels in the build context (tests/image/build does):
#   --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS=/src/build/wheels
ARG BASE=python:3.11-slim

# Two stages: the sources, pip and the wheels stay in the first; the second gets only the venv.
FROM ${BASE} AS build
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/flowstate
COPY . /src
RUN /opt/flowstate/bin/pip install --no-warn-script-location /src \
 && /opt/flowstate/bin/pip uninstall --yes pip setuptools

FROM ${BASE}
# The full PATH: an image made with `docker import` (the Debian base) has none to extend.
ENV PATH=/opt/flowstate/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLOWSTATE_HOME=/home/flowstate/.flowstate-bot
# FLOWSTATE_HOME exists, the user's, 0700: a named volume mounted there starts with this owner and mode.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin flowstate \
 && install -d -o flowstate -g flowstate -m 0700 /home/flowstate/.flowstate-bot
COPY --from=build /opt/flowstate /opt/flowstate
# Numeric, so that a runtime can tell it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/flowstate

# No HEALTHCHECK: `run` (Socket Mode) listens on no port, and `flowstate-bot check` reaches Slack
# and the operated stack, so it would call the bot unhealthy for a failure of theirs.
EXPOSE 3000
ENTRYPOINT ["flowstate-bot"]
CMD ["run"]
