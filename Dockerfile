# kong-db-init: a small non-root image holding the program and the Node runtime it needs under
# /opt/kong-db-init (launcher, node, app/ with the bundle, lib/ with a C++ runtime old enough for
# glibc 2.28, used by `install DIR` copies in images without their own libstdc++).
#
#   docker build -t kong-db-init .                                  # distroless, uid 65532
#   docker build -t kong-db-init-aio:3.7.1 \
#     --build-arg BASE=kong:3.7.1 --build-arg USER=kong .           # all-in-one, FROM a Kong image
#
# Works with readOnlyRootFilesystem: true (it writes only to $TMPDIR, the status file and, for
# `install DIR`, DIR). No `# syntax=` line (BuildKit would pull that frontend image): builds with
# the legacy builder, needing only the npm registry and Debian mirror besides the base images.
ARG NODE_IMAGE=node:24-bookworm-slim
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
# libstdc++/libgcc_s for the installed copy's fallback: bullseye's need only glibc 2.18 (Node: 2.28)
ARG LIBS_IMAGE=debian:bullseye-slim

FROM ${LIBS_IMAGE} AS libs
RUN mkdir /libs \
 && cp -L "$(ls /usr/lib/*-linux-gnu/libstdc++.so.6)" "$(ls /lib/*-linux-gnu/libgcc_s.so.1)" /libs/

FROM ${NODE_IMAGE} AS build
# binutils: `strip` takes the debug info out of node (127 MB -> 108 MB)
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# the program installs itself (bundle + this Node binary, stripped of its debug info) ...
RUN npm run build \
 && node dist/cli.js install /out/opt/kong-db-init \
 && strip /out/opt/kong-db-init/node
# ... with the old C++ runtime from `libs` (an installed copy's `install DIR` ships its own lib/)
COPY --from=libs /libs/ /out/opt/kong-db-init/lib/
RUN env -i /out/opt/kong-db-init/kong-db-init --version \
 && env -i LD_LIBRARY_PATH=/out/opt/kong-db-init/lib /out/opt/kong-db-init/node --version

FROM ${BASE}
ARG VERSION=0.1.0
ARG USER=65532:65532
LABEL org.opencontainers.image.title="kong-db-init" \
      org.opencontainers.image.description="Runs Kong Gateway database migrations safely from a Kubernetes init container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kong-db-init/kong-db-init"
COPY --from=build /out/opt/kong-db-init /opt/kong-db-init
ENV PATH="/opt/kong-db-init:${PATH}"
USER ${USER}
# exec form, no shell needed (distroless has none)
ENTRYPOINT ["/opt/kong-db-init/node", "/opt/kong-db-init/app/cli.js"]
CMD ["--help"]
