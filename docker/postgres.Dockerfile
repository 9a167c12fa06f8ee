# PostgreSQL 15 for the CA replicas, from Debian's packages (the base image may already hold
# them, as the one CI builds with debootstrap does: then nothing is downloaded).
#   docker build -f docker/postgres.Dockerfile -t bsn-postgres .
FROM debian:bookworm-slim
RUN if ! test -x /usr/lib/postgresql/15/bin/postgres; then \
      apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown postgres:postgres /var/lib/postgresql/data /run/postgresql \
 && chmod 0700 /var/lib/postgresql/data
COPY docker/pg-entry /usr/local/bin/pg-entry
USER postgres
ENTRYPOINT ["pg-entry"]
