# Build stage: the fjord binary in release mode.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p fjord-server

# Run stage: the binary alone, against an external Postgres given by DATABASE_URL.
FROM debian:bookworm-slim
# The trust store for issuers' keys over HTTPS (add a regional CA with update-ca-certificates).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home /var/lib/fjord fjord
COPY --from=build /src/target/release/fjord /usr/local/bin/fjord
USER fjord
ENV FJORD_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["fjord"]
CMD ["serve"]
