# syntax=docker/dockerfile:1
#
# trialtail's images: one static binary at /trialtail and nothing else (no shell, no package manager).
#
#   docker build -t ghcr.io/trialtail/trialtail:0.1.0 .                                   # user 65532
#   docker build --target dropin -t ghcr.io/trialtail/trialtail:0.1.0-dropin .            # root
#
# Both platforms at once, pushed (docker buildx; each platform's build stage compiles natively – under QEMU for
# the platform that is not the builder's, `docker run --privileged --rm tonistiigi/binfmt --install arm64` – so
# no cross toolchain is needed):
#
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t ghcr.io/trialtail/trialtail:0.1.0 --push .
#   docker buildx build --platform linux/amd64,linux/arm64 --target dropin --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
#     -t ghcr.io/trialtail/trialtail:0.1.0-dropin --push .
#
# The ENTRYPOINT is the binary, so the default image serves as the webhook (`webhook …`) and as the injected
# sidecar (`run --source pod-log …`), non-root. The `dropin` target is the same binary running as root, for Katib's
# metrics collector (kinds StdOut and File, to which Katib passes only its arguments): like Katib's own collector
# image, it must be able to SIGTERM the training process on an early stop, which runs as whatever user the
# training image chose (a process may signal only its own user's processes unless it is root).

# The image's version, commit and build time (OCI labels).
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

FROM rust:1.95-bookworm AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
# Static glibc, not position-independent (no relocation table to carry: about 0.75 MB smaller than static-pie).
# The target is given explicitly so that the flags apply to trialtail only, not to the build scripts and proc
# macros compiled for the host. Each platform has its own target cache. (`-C force-unwind-tables=no` changes
# nothing here: with fat LTO the standard library's bitcode keeps the unwind tables of every function.)
# Profile-guided: scripts/pgo-build.sh builds an instrumented binary, runs it over the logs in examples/logs and
# builds again with what it counted (rustup's llvm-tools merges the counts): the line path reads about 25 % faster
# than a plain `cargo build --release` and the binary stays under 10 MiB (docs/performance.md); it takes two
# release builds' time.
ENV RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=trialtail-target-${TARGETARCH},target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
    && rustup component add llvm-tools \
    && scripts/pgo-build.sh --target "$target" \
    && cp "target/$target/release/trialtail" /trialtail

# What both images share: CA roots, /etc/passwd with `nonroot` (65532), the binary as the ENTRYPOINT, the labels.
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
ARG VERSION
ARG REVISION
ARG CREATED
LABEL org.opencontainers.image.title="trialtail" \
      org.opencontainers.image.description="Metrics collector for hyper-parameter tuning: training logs into Prometheus and Kubeflow Katib" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/trialtail/trialtail" \
      org.opencontainers.image.documentation="https://github.com/trialtail/trialtail/blob/main/docs/kubernetes.md" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /trialtail /trialtail
EXPOSE 9478
ENTRYPOINT ["/trialtail"]

# Katib's drop-in collector: root, as Katib's own file-metrics-collector image runs.
FROM runtime AS dropin
LABEL org.opencontainers.image.title="trialtail-dropin"
USER 0:0

# The default: the sidecar and the webhook, non-root.
FROM runtime
USER 65532:65532
