# Placeholder until the production issue: builds the wheel and runs the tests.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends g++ cmake make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir ".[server]"
