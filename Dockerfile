# syntax=docker/dockerfile:1
#
# trialtail's image: one static binary at /trialtail and nothing else (no shell, no package manager).
#
#   docker build -t ghcr.io/trialtail/trialtail:0.1.0 .
#
# The ENTRYPOINT is the binary, so the same image serves as the webhook (`webhook …`), as the injected sidecar
# (`run --source pod-log …`) and as Katib's drop-in metrics collector, to which Katib passes only its arguments.

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

# CA roots, /etc/passwd with `nonroot` (65532), nothing else.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /trialtail /trialtail
USER 65532:65532
EXPOSE 9478
ENTRYPOINT ["/trialtail"]
