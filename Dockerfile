# syntax=docker/dockerfile:1
#
# trialtail's images: one static binary at /trialtail and nothing else (no shell, no package manager).
#
#   docker build -t ghcr.io/trialtail/trialtail:0.1.0 .                                   # user 65532
#   docker build --target dropin -t ghcr.io/trialtail/trialtail:0.1.0-dropin .            # root
#
# The ENTRYPOINT is the binary, so the default image serves as the webhook (`webhook …`) and as the injected
# sidecar (`run --source pod-log …`), non-root. The `dropin` target is the same binary running as root, for Katib's
# metrics collector (kinds StdOut and File, to which Katib passes only its arguments): like Katib's own collector
# image, it must be able to SIGTERM the training process on an early stop, which runs as whatever user the
# training image chose (a process may signal only its own user's processes unless it is root).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Static glibc, not position-independent (no relocation table to carry: about 0.75 MB smaller than static-pie). The
# target is given explicitly so that the flags apply to trialtail only, not to the build scripts and proc
# macros compiled for the host.
ENV RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
    && cargo build --release --locked --bin trialtail --target "$target" \
    && cp "target/$target/release/trialtail" /trialtail

# Katib's drop-in collector: root, as Katib's own file-metrics-collector image runs.
FROM gcr.io/distroless/static-debian12 AS dropin
COPY --from=build /trialtail /trialtail
USER 0:0
EXPOSE 9478
ENTRYPOINT ["/trialtail"]

# The default: CA roots, /etc/passwd with `nonroot` (65532), nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /trialtail /trialtail
USER 65532:65532
EXPOSE 9478
ENTRYPOINT ["/trialtail"]
