# Production image: a static-enough binary on a slim Debian. libpq and SQLite are built from
# source into the binary (bundled features), so the runtime image needs no database libraries.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin creditguard

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/creditguard creditguard \
    && mkdir -p /var/lib/creditguard && chown creditguard /var/lib/creditguard
COPY --from=build /src/target/release/creditguard /usr/local/bin/creditguard
USER creditguard
WORKDIR /var/lib/creditguard
ENV CREDITGUARD_BIND=0.0.0.0:8080 CREDITGUARD_ENVIRONMENT=production LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["creditguard"]
CMD ["serve"]
