# The weir controller image. No image can be built on the machine this project is developed
# on (no Docker there), so this file is reviewed, not tested; CI with a container runtime
# should build it.
#
#   docker build -t weir:dev .
#
# Build: a release binary of `weir` (and the kubectl plugin, to copy out if wanted). Not a
# static (musl) binary: weir runs git, ssh and kubectl at run time, so the image carries a
# Debian userland anyway, and building against the same Debian release as the run stage
# keeps glibc in step with it without a second C toolchain for aws-lc-rs.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin weir --bin kubectl-weir

# Run: what weir calls at run time and nothing more: git (pushing reverts), OpenSSH's
# client (ssh:// repositories), CA certificates (https://), kubectl (`kubectl kustomize`
# builds kustomizations when no kustomize binary is present).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client kubernetes-client \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/weir /usr/local/bin/weir
COPY --from=build /src/target/release/kubectl-weir /usr/local/bin/kubectl-weir
# A fixed non-root user; the chart runs it with a read-only root filesystem and mounts a
# writable volume at /var/cache/weir for the Git clones.
USER 65532:65532
ENV WEIR_GIT_CACHE_DIR=/var/cache/weir/git HOME=/tmp
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["controller", "--leader-elect"]
