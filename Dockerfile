# Build the payments server (and mock-processor, the development card processor) in a full
# toolchain image, run them in a slim one.
FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p payments-server -p mock-processor --features payments-server/otlp --locked

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 tollgate
COPY --from=build /src/target/release/payments-server /usr/local/bin/payments-server
COPY --from=build /src/target/release/mock-processor /usr/local/bin/mock-processor
USER tollgate
ENV BIND_ADDR=0.0.0.0:8000
EXPOSE 8000
CMD ["payments-server"]
