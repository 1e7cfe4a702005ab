# syntax=docker/dockerfile:1.7
#
# The controller's image: one static (musl) karpctl-controller binary on distroless/static,
# running as uid/gid 65532 ("nonroot"). It writes no files, so it runs with
# readOnlyRootFilesystem, no capabilities and no privilege escalation, as the Deployment asks.
#
#   docker build --build-arg KARPCTL_COMMIT=$(git rev-parse --short HEAD) -t karpctl-controller .
#
# Each platform builds natively (buildx with QEMU or native runners): the builder compiles for
# its own architecture's musl target, so no cross C toolchain is needed for aws-lc (the TLS
# and AWS SDK crypto, built from C).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools cmake clang \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
# aws-lc-sys compiles C for the musl target with musl's wrapper.
ENV CC_x86_64_unknown_linux_musl=musl-gcc \
    CC_aarch64_unknown_linux_musl=musl-gcc \
    CARGO_TERM_COLOR=never
WORKDIR /src
COPY . .
# Logged as "commit" on every line and in karpenter_build_info (compiled in).
ARG KARPCTL_COMMIT=unknown
ENV KARPCTL_COMMIT=${KARPCTL_COMMIT}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --locked --release -p karpctl-controller --target "$target" \
 && cp "target/$target/release/karpctl-controller" /karpctl-controller

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /karpctl-controller /karpctl-controller
USER 65532:65532
# Upstream's defaults; the Deployment sets them too.
EXPOSE 8080 8081
ENTRYPOINT ["/karpctl-controller"]
