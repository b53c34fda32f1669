# syntax=docker/dockerfile:1
# The controller's image: `proto` built from this checkout in a Rust image, run on Debian slim
# as a non-root user, with what the controller calls at run time: git and ssh (clones, fetches
# and pushes of the company and product repositories), CA certificates (HTTPS remotes, model
# providers) and python3 (the example company's checks; add your products' toolchains in an
# image FROM this one).
#
#   docker build -t registry.example.com/proto:0.1.0 .
#   docker run --rm --init registry.example.com/proto:0.1.0 --help
#
# The desktop feature (X displays) is left out: a pod has no display. `proto` does not reap
# orphaned processes, so as PID 1 it needs an init: `docker run --init`, or in Kubernetes the
# pod's shared process namespace (the chart sets it).

ARG RUST_VERSION=1.90
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pkg-config libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --no-default-features --features kubernetes \
    && install -m 0755 target/release/proto /usr/local/bin/proto

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates git openssh-client libssl3 python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 proto \
    && useradd --uid 10001 --gid 10001 --home-dir /home/proto --create-home --shell /usr/sbin/nologin proto \
    && install -d -o 10001 -g 10001 /var/lib/proto
COPY --from=build /usr/local/bin/proto /usr/local/bin/proto
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
ENV HOME=/home/proto
WORKDIR /home/proto
VOLUME ["/var/lib/proto"]
EXPOSE 7070
ENTRYPOINT ["proto"]
CMD ["controller", "--state-dir", "/var/lib/proto", "--listen", "0.0.0.0:7070"]
