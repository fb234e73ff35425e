# The bot for production: Socket Mode by default (`run`), HTTP with `run --http --host 0.0.0.0`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    FLOWSTATE_HOME=/home/flowstate/.flowstate-bot

WORKDIR /src
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
RUN pip install . && rm -rf /src

RUN useradd --create-home --uid 10001 flowstate
USER flowstate
WORKDIR /home/flowstate

EXPOSE 3000
ENTRYPOINT ["flowstate-bot"]
CMD ["run"]
