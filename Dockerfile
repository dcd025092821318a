# syntax=docker/dockerfile:1
# tollgate image: build with the pinned toolchain, run as non-root on a distroless base.
#   docker build -t ghcr.io/tollgate/tollgate:0.1.0 .
# No container engine runs in this repo's CI; `make validate-deploy` checks the manifests that
# use this image, and the Dockerfile is kept simple enough to be right by construction.

ARG RUST_VERSION=1.88
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY e2e/demo-upstream/Cargo.toml e2e/demo-upstream/Cargo.toml
RUN mkdir -p src e2e/demo-upstream/src \
 && echo 'fn main() {}' > src/main.rs && echo '' > src/lib.rs \
 && echo 'fn main() {}' > e2e/demo-upstream/src/main.rs \
 && cargo build --release --locked -p tollgate \
 && rm -rf src e2e/demo-upstream/src
COPY src src
COPY e2e/demo-upstream/src e2e/demo-upstream/src
# Touch so cargo sees the real sources as newer than the placeholder build.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked -p tollgate \
 && install -D -m 0755 target/release/tollgate /out/tollgate

# distroless/cc: glibc + libgcc, no shell, no package manager; user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/tollgate /usr/local/bin/tollgate
USER 65532:65532
# ext_proc gRPC (when not on a Unix socket) and admin (/healthz, /ready, /metrics).
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/tollgate"]
CMD ["serve", "--config", "/etc/tollgate/tollgate.yaml"]
